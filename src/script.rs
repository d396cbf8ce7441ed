//! The boot scripts of a kexec tree: `kexec-boot` (POSIX sh, from
//! `templates/kexec-boot.sh`) and `netboot.ipxe`.
//!
//! Values reach the script only as shell-quoted literals, so a kernel
//! parameter or store path can contain anything.

use std::fmt::Write;

/// What the scripts boot.
pub struct BootSpec<'a> {
    /// The system's toplevel, e.g. `/nix/store/…-nixos-system-…`.
    pub toplevel: &'a str,
    pub kernel_params: &'a [String],
    pub initrd_bytes: u64,
    pub unpacked_bytes: u64,
}

impl BootSpec<'_> {
    fn init(&self) -> String {
        format!("{}/init", self.toplevel.trim_end_matches('/'))
    }

    fn params(&self) -> String {
        self.kernel_params.join(" ")
    }
}

/// `bin/nixos-kexec`: the entry point of a tree, a Nix package and the tarball.
pub const NIXOS_KEXEC: &str = "#!/bin/sh\n# Boots the NixOS system in the directory above with kexec.\n\
exec \"$(dirname \"$0\")/../kexec-boot\" \"$@\"\n";

/// Quote `s` for a POSIX shell: a single-quoted word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Render `kexec-boot`.
pub fn kexec_boot(spec: &BootSpec) -> String {
    include_str!("templates/kexec-boot.sh")
        .replace("@TOPLEVEL@", &spec.toplevel.replace('\n', " "))
        .replace("@INIT@", &shell_quote(&spec.init()))
        .replace("@PARAMS@", &shell_quote(&spec.params()))
        .replace("@INITRD_BYTES@", &spec.initrd_bytes.to_string())
        .replace("@UNPACKED_BYTES@", &spec.unpacked_bytes.to_string())
}

/// Render `netboot.ipxe`; `${cmdline}` lets a chainloading iPXE script add
/// kernel parameters.
pub fn netboot_ipxe(spec: &BootSpec) -> String {
    let mut s = String::from("#!ipxe\n");
    let params = spec.params();
    let _ = writeln!(
        s,
        "kernel bzImage init={} initrd=initrd.gz{}{} ${{cmdline}}",
        spec.init(),
        if params.is_empty() { "" } else { " " },
        params
    );
    s.push_str("initrd initrd.gz\nboot\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn placeholders_filled() {
        let params = vec!["console=ttyS0".to_owned(), "x='$(reboot)'".to_owned()];
        let spec = BootSpec {
            toplevel: "/nix/store/x-sys",
            kernel_params: &params,
            initrd_bytes: 1,
            unpacked_bytes: 2,
        };
        let s = kexec_boot(&spec);
        assert!(!s.contains('@'), "{s}");
        assert!(
            s.contains(r#"params='console=ttyS0 x='\''$(reboot)'\'''"#),
            "{s}"
        );
        assert!(
            netboot_ipxe(&spec)
                .contains("init=/nix/store/x-sys/init initrd=initrd.gz console=ttyS0")
        );
    }
}
