//! The boot scripts of a kexec tree: `kexec-boot` (POSIX sh, from
//! `templates/kexec-boot.sh`) and `netboot.ipxe`.
//!
//! Nothing a caller passes can run as code:
//! - the template is filled in one pass, so a value that looks like a
//!   placeholder stays text;
//! - values reach the shell only as single-quoted literals;
//! - iPXE has no quoting at all (`${…}` is expanded anywhere, `||` and `&&`
//!   chain commands, a line break starts one), so what it cannot carry
//!   literally is refused;
//! - the toplevel must be a store path.
//!
//! iPXE's script syntax: <https://ipxe.org/scripting>.

use std::fmt::Write;

use anyhow::Context;
use camino::Utf8Path;

use crate::nix::store_path::StorePath;

/// Why a script cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("--toplevel {0:?} is not a store path (/nix/store/<hash>-<name>): {1}")]
    Toplevel(String, crate::nix::store_path::StorePathError),
    #[error(
        "kernel parameter {0:?} cannot be carried by netboot.ipxe: iPXE would {1}; \
         drop it from the iPXE script's parameters, or pass it through iPXE's ${{cmdline}}"
    )]
    IpxeParam(String, &'static str),
    #[error("{0:?} is not a plain file name for netboot.ipxe (letters, digits, '.', '_', '-')")]
    IpxeFileName(String),
}

/// What the scripts boot.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    /// The system's toplevel, e.g. `/nix/store/…-nixos-system-…`.
    pub toplevel: &'a str,
    pub kernel_params: &'a [String],
    pub initrd_bytes: u64,
    pub unpacked_bytes: u64,
    /// SHA-256 of the initrd, lowercase hex (kexec-boot checks it).
    pub initrd_sha256: String,
    /// Size and SHA-256 of the kernel.
    pub kernel_bytes: u64,
    pub kernel_sha256: String,
}

/// The size and lowercase-hex SHA-256 of the file at `path`.
pub fn file_sum(path: &Utf8Path) -> anyhow::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
    let mut sha = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut sha).with_context(|| format!("cannot read {path}"))?;
    Ok((bytes, data_encoding::HEXLOWER.encode(&sha.finalize())))
}

impl<'a> BootSpec<'a> {
    /// The boot of `toplevel` with `kernel_params`, before any initrd is
    /// measured (enough to check the parameters).
    pub fn new(toplevel: &'a str, kernel_params: &'a [String]) -> Self {
        BootSpec {
            toplevel,
            kernel_params,
            initrd_bytes: 0,
            unpacked_bytes: 0,
            initrd_sha256: String::new(),
            kernel_bytes: 0,
            kernel_sha256: String::new(),
        }
    }

    /// The same boot with `kernel`, measured for kexec-boot's check.
    pub fn with_kernel(self, kernel: &Utf8Path) -> anyhow::Result<Self> {
        let (kernel_bytes, kernel_sha256) = file_sum(kernel)?;
        Ok(BootSpec {
            kernel_bytes,
            kernel_sha256,
            ..self
        })
    }

    /// The same boot with `initrd`: its size, and what the kernel unpacks
    /// from it (for the memory check).
    pub fn with_initrd(self, initrd: &Utf8Path) -> anyhow::Result<Self> {
        let (initrd_bytes, initrd_sha256) = file_sum(initrd)?;
        Ok(BootSpec {
            initrd_bytes,
            initrd_sha256,
            unpacked_bytes: crate::initrd::unpacked_size(&[initrd.to_owned()])?,
            ..self
        })
    }

    /// The toplevel's `init`, once the toplevel is known to be a store path.
    fn init(&self) -> Result<String, ScriptError> {
        let path = StorePath::from_absolute_path(self.toplevel.trim_end_matches('/'))
            .map_err(|e| ScriptError::Toplevel(self.toplevel.to_owned(), e))?;
        Ok(format!("{}/init", path.to_absolute_path()))
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

/// Replace each `@NAME@` of `template` whose NAME is in `values`, in one
/// pass: inserted text is never scanned again.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let hit = after.find('@').and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, end))
        });
        match hit {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Render `kexec-boot`.
pub fn kexec_boot(spec: &BootSpec) -> Result<String, ScriptError> {
    let init = spec.init()?;
    Ok(fill(
        include_str!("templates/kexec-boot.sh"),
        &[
            // A store path: no line break can end the comment it stands in.
            ("TOPLEVEL", spec.toplevel.trim_end_matches('/').to_owned()),
            ("INIT", shell_quote(&init)),
            ("PARAMS", shell_quote(&spec.params())),
            ("INITRD_BYTES", spec.initrd_bytes.to_string()),
            ("INITRD_SHA256", shell_quote(&spec.initrd_sha256)),
            ("KERNEL_BYTES", spec.kernel_bytes.to_string()),
            ("KERNEL_SHA256", shell_quote(&spec.kernel_sha256)),
            ("UNPACKED_BYTES", spec.unpacked_bytes.to_string()),
        ],
    ))
}

/// Why iPXE cannot carry `param` literally, if it cannot.
fn ipxe_unsafe(param: &str) -> Option<&'static str> {
    if param.contains('$') {
        Some("expand `${…}` in it")
    } else if param.contains("||") || param.contains("&&") {
        Some("take `||` or `&&` for a second command")
    } else if param.chars().any(char::is_control) {
        Some("end the command at a line break or control character")
    } else if param.starts_with('#') {
        Some("take it for a comment")
    } else {
        None
    }
}

fn ipxe_file_name(name: &str) -> Result<&str, ScriptError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        Ok(name)
    } else {
        Err(ScriptError::IpxeFileName(name.to_owned()))
    }
}

/// Render `netboot.ipxe`, for `kernel` and `initrd` served beside it;
/// `${cmdline}` lets a chainloading iPXE script add kernel parameters.
pub fn netboot_ipxe(spec: &BootSpec, kernel: &str, initrd: &str) -> Result<String, ScriptError> {
    let init = spec.init()?;
    let kernel = ipxe_file_name(kernel)?;
    let initrd = ipxe_file_name(initrd)?;
    for p in spec.kernel_params {
        if let Some(why) = ipxe_unsafe(p) {
            return Err(ScriptError::IpxeParam(p.clone(), why));
        }
    }
    let mut s = String::from("#!ipxe\n");
    let params = spec.params();
    let _ = writeln!(
        s,
        "kernel {kernel} init={init} initrd={initrd}{}{params} ${{cmdline}}",
        if params.is_empty() { "" } else { " " },
    );
    let _ = writeln!(s, "initrd {initrd}\nboot");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPLEVEL: &str = "/nix/store/4fqb3vhbdwzi43hf9ax6ji0nvkjzq1ay-nixos-system-x";

    fn spec(params: &[String]) -> BootSpec<'_> {
        BootSpec {
            initrd_bytes: 1,
            unpacked_bytes: 2,
            ..BootSpec::new(TOPLEVEL, params)
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn fill_is_one_pass() {
        let v = [("A", "@B@".to_owned()), ("B", "b".to_owned())];
        assert_eq!(fill("x@A@y@B@z@C@@", &v), "x@B@yb z@C@@".replace(' ', ""));
        assert_eq!(fill("a@b", &v), "a@b");
    }

    #[test]
    fn placeholders_filled() {
        let params = vec!["console=ttyS0".to_owned(), "x='$(reboot)'".to_owned()];
        let s = kexec_boot(&spec(&params)).expect("render");
        assert!(!s.contains('@'), "{s}");
        assert!(
            s.contains(r#"params='console=ttyS0 x='\''$(reboot)'\'''"#),
            "{s}"
        );
        let ipxe = netboot_ipxe(&spec(&params[..1]), "bzImage", "initrd.gz").expect("ipxe");
        assert!(ipxe.contains(&format!(
            "kernel bzImage init={TOPLEVEL}/init initrd=initrd.gz console=ttyS0 ${{cmdline}}\n\
             initrd initrd.gz\n"
        )));
    }

    #[test]
    fn a_parameter_that_looks_like_a_placeholder_stays_text() {
        let params = vec![
            "; touch /tmp/pwned; ".to_owned(),
            "x=@INITRD_BYTES@".to_owned(),
        ];
        let s = kexec_boot(&spec(&params)).expect("render");
        assert!(
            s.contains("params='; touch /tmp/pwned;  x=@INITRD_BYTES@'\n"),
            "{s}"
        );
        assert!(s.contains("initrd_bytes=1\n"), "{s}");
    }

    #[test]
    fn toplevel_must_be_a_store_path() {
        for bad in [
            "/x@PARAMS@",
            "/nix/store/short-x",
            "relative",
            "/nix/store/x\nrm -rf /",
        ] {
            let s = BootSpec {
                toplevel: bad,
                ..spec(&[])
            };
            assert!(
                matches!(kexec_boot(&s), Err(ScriptError::Toplevel(..))),
                "{bad:?}"
            );
            assert!(matches!(
                netboot_ipxe(&s, "bzImage", "initrd"),
                Err(ScriptError::Toplevel(..))
            ));
        }
    }

    #[test]
    fn ipxe_refuses_what_it_cannot_carry() {
        for (bad, why) in [
            ("a=${x}", "expand"),
            ("a\nchain http://x/", "line break"),
            ("a||chain", "second command"),
            ("b&&c", "second command"),
            ("#c", "comment"),
        ] {
            let params = vec![bad.to_owned()];
            let e = netboot_ipxe(&spec(&params), "bzImage", "initrd").expect_err(bad);
            assert!(e.to_string().contains(why), "{e}");
        }
        for bad in ["", "..", "a b", "a/b", "${x}"] {
            assert_eq!(
                netboot_ipxe(&spec(&[]), bad, "initrd"),
                Err(ScriptError::IpxeFileName(bad.to_owned()))
            );
        }
    }
}
