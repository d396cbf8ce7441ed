//! The kexec tree, laid out as nixpkgs' `system.build.kexecTree`:
//!
//! ```text
//! DIR/bzImage       the kernel
//! DIR/initrd.gz     stage 1 (prepended as is) + a cpio with /nix-store.squashfs
//!                   (and, split with --split-store or --store-parts past 4 GiB,
//!                   /nix-store-1.squashfs, …)
//! DIR/kexec-boot    the script that loads both and jumps
//! DIR/netboot.ipxe  the same boot for iPXE
//! DIR/bin/nixos-kexec  runs ../kexec-boot (so a Nix package's result/bin works)
//! DIR/kexec, DIR/ip  static tools for the old host, when given
//! ```
//!
//! The tree is assembled in a temporary directory beside DIR and renamed
//! into place, so DIR is either the old tree or the new one.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::script::{self, BootSpec};
use crate::initrd::{self, FileSpec, InitrdCompression};
use crate::nix::closure::Closure;
use crate::output::{TempDir, write_file};
use crate::squashfs;

/// The files of a tree, with their modes. All but [`NETBOOT_IPXE`] are in
/// every tree.
pub const FILES: [(&str, u32); 5] = [
    ("bin/nixos-kexec", 0o755),
    ("bzImage", 0o644),
    ("initrd.gz", 0o644),
    (KEXEC_BOOT, 0o755),
    ("netboot.ipxe", 0o644),
];

/// The script that loads the tree and jumps.
pub const KEXEC_BOOT: &str = "kexec-boot";

/// Left out of a tree whose kernel parameters iPXE cannot carry (`tree`
/// says why when it builds it); the tree is still whole: `tarball` packs it.
pub const NETBOOT_IPXE: &str = "netboot.ipxe";

/// Static tools a tree may carry for the old host; kexec-boot uses them
/// before the host's own.
pub const TOOLS: [&str; 2] = ["kexec", "ip"];

pub struct TreeOptions<'a> {
    pub root: &'a Utf8Path,
    pub toplevel: &'a str,
    pub kernel: &'a Utf8Path,
    pub prepend_initrd: &'a [Utf8PathBuf],
    pub kernel_params: &'a [String],
    pub squashfs: squashfs::Options,
    pub initrd: initrd::Options,
    /// (name in [`TOOLS`], file) to bundle.
    pub tools: Vec<(&'static str, &'a Utf8Path)>,
    /// The largest image one part of the store may make:
    /// [`squashfs::NEWC_LIMIT`], or less in tests.
    pub part_limit: u64,
    /// How many images the store may or must take.
    pub parts: StoreParts,
}

/// How many squashfs images the store goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreParts {
    /// One: a store past the limit is refused (the default; what a stage 1
    /// that mounts only `/nix-store.squashfs` needs).
    One,
    /// As many as the store needs (`--split-store`).
    AsNeeded,
    /// Exactly this many (`--store-parts N`): the split, then empty images
    /// up to N, so that a stage 1 that mounts N parts, a number fixed when
    /// the system was evaluated, finds every one of them. A store needing
    /// more is refused.
    Exactly(usize),
}

/// Why `parts` cannot hold a store that needs `needed` images, or None.
fn parts_refusal(parts: StoreParts, needed: usize) -> Option<String> {
    let reason = "a newc cpio holds files up to 4 GiB";
    match parts {
        StoreParts::AsNeeded => None,
        StoreParts::One if needed > 1 => Some(format!(
            "the store needs {needed} squashfs images: {reason}. With the NixOS module, set \
             nixosKexec.storeParts = {needed} (mkkexec: --store-parts {needed}), which mounts \
             every part in stage 1; or pass --split-store when the system's own stage 1 mounts \
             every /nix-store*.squashfs as a lower layer of the /nix/store overlay. Nothing was \
             compressed"
        )),
        StoreParts::Exactly(n) if needed > n => Some(format!(
            "the store needs {needed} squashfs images ({reason}), but --store-parts is {n}: set \
             nixosKexec.storeParts = {needed} in the NixOS module (mkkexec: --store-parts \
             {needed}). Nothing was compressed"
        )),
        _ => None,
    }
}

/// The name in the initrd of part `i` of the store: `/nix-store.squashfs`
/// (which holds `nix-path-registration`), then `/nix-store-1.squashfs`, ….
pub fn part_name(i: usize) -> String {
    if i == 0 {
        "/nix-store.squashfs".into()
    } else {
        format!("/nix-store-{i}.squashfs")
    }
}

/// Whether `dir` holds nothing but what a tree holds (so replacing it
/// loses nothing else); names the first stranger otherwise.
fn stranger_in_tree(dir: &Utf8Path) -> Result<Option<Utf8PathBuf>> {
    for rel in ["", "bin"] {
        let d = dir.join(rel);
        let entries = std::fs::read_dir(&d).with_context(|| format!("cannot read {d}"))?;
        for e in entries {
            let e = e.with_context(|| format!("cannot read {d}"))?;
            let name = e.file_name();
            let path = Utf8Path::new(rel).join(name.to_string_lossy().as_ref());
            let known = path == "bin"
                || FILES.iter().any(|(f, _)| path == *f)
                || TOOLS.iter().any(|t| path == *t);
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !known || (is_dir != (path == "bin")) {
                return Ok(Some(d.join(name.to_string_lossy().as_ref())));
            }
        }
    }
    Ok(None)
}

pub fn build(closure: &Closure, out: &Utf8Path, opts: &TreeOptions) -> Result<()> {
    let toplevel = crate::nix::store_path::StorePath::from_absolute_path(opts.toplevel)
        .with_context(|| format!("--toplevel {}", opts.toplevel))?;
    if !closure.paths.iter().any(|p| p.path == toplevel) {
        bail!(
            "--toplevel {toplevel} is not in the closure; pass the closure of the system's toplevel"
        );
    }
    for (name, src) in &opts.tools {
        if !src.is_file() {
            bail!("--{name} {src} is not a file (a static {name} to bundle)");
        }
    }
    if !opts.kernel.is_file() {
        bail!(
            "--kernel {} is not a file (the bzImage / Image of the system's kernel)",
            opts.kernel
        );
    }
    if opts.prepend_initrd.is_empty() {
        bail!(
            "--prepend-initrd is missing: pass NixOS' stage-1 initrd \
             (config.system.build.initialRamdisk/initrd), which mounts the store"
        );
    }
    for p in opts.prepend_initrd {
        initrd::check_prepend(p).context("--prepend-initrd")?;
    }
    // The scripts' inputs are checked before the long work: the sizes are
    // all that changes later.
    let spec = BootSpec::new(opts.toplevel, opts.kernel_params);
    script::kexec_boot(&spec)?;
    let ipxe = match script::netboot_ipxe(&spec, "bzImage", "initrd.gz") {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "mkkexec: warning: {out} gets no {NETBOOT_IPXE}, so it cannot be netbooted \
                 (kexec-boot and the tarball are not affected): {e}"
            );
            false
        }
    };
    // Known before anything is compressed: the NAR sizes bound the images.
    closure.check_present(opts.root)?;
    let mut parts = squashfs::split(closure, opts.part_limit)?;
    if let Some(refusal) = parts_refusal(opts.parts, parts.len()) {
        bail!("{refusal}");
    }
    let needed = parts.len();
    if let StoreParts::Exactly(n) = opts.parts {
        // Images holding nothing (the root directory alone), so that every
        // name the stage 1 mounts exists.
        parts.resize(n, Vec::new());
    }
    if parts.len() > 1 && !opts.squashfs.quiet {
        if needed == parts.len() {
            eprintln!(
                "mkkexec: the store is split into {needed} squashfs images (a newc cpio holds \
                 files up to 4 GiB)"
            );
        } else {
            eprintln!(
                "mkkexec: the store fills {needed} of the {} squashfs images --store-parts asks \
                 for; the other {} are empty",
                parts.len(),
                parts.len() - needed
            );
        }
    }
    if out.exists() {
        if !out.is_dir() {
            bail!("{out} exists and is not a directory; remove it or choose another --output");
        }
        if let Some(stranger) = stranger_in_tree(out)? {
            bail!(
                "{out} exists and is not a kexec tree ({stranger} is not part of one); \
                 remove it or choose another --output"
            );
        }
    }
    let tmp = TempDir::beside(out)?;
    build_in(
        closure,
        tmp.path(),
        opts,
        &toplevel.to_string(),
        ipxe,
        &parts,
    )
    .map_err(|e| {
        // Said of the tree, not of the temporary directory it is built in
        // (a full disk would name `.tree.tmp-…/initrd.gz`).
        anyhow::anyhow!(crate::report(&e).replace(tmp.path().as_str(), out.as_str()))
    })?;
    // Replace an old tree so that `out` is always one whole tree: move it
    // aside, move the new one in, then delete the old.
    let old = if out.exists() {
        let old = TempDir::beside(out)?;
        std::fs::remove_dir(old.path()).with_context(|| format!("cannot remove {}", old.path()))?;
        std::fs::rename(out, old.path())
            .with_context(|| format!("cannot move the old tree {out} aside"))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = tmp.commit(out) {
        // Put the old tree back rather than lose it with the new one.
        if let Some(old) = &old {
            let _ = std::fs::rename(old.path(), out);
        }
        return Err(e);
    }
    drop(old);
    Ok(())
}

fn build_in(
    closure: &Closure,
    dir: &Utf8Path,
    opts: &TreeOptions,
    toplevel: &str,
    ipxe: bool,
    parts: &[Vec<usize>],
) -> Result<()> {
    let initrd_path = dir.join("initrd.gz");
    if opts.initrd.codec.compression == InitrdCompression::None {
        // Each image is written into the initrd where it belongs: not
        // written to a file first and copied, which took its size twice.
        let dests: Vec<String> = (0..parts.len()).map(part_name).collect();
        initrd::build_in_place(&initrd_path, opts.prepend_initrd, &dests, |i, w, at| {
            let what = format!("squashfs {} in {initrd_path}", dests[i]);
            squashfs::write_part(
                closure,
                opts.root,
                w,
                at,
                &what,
                &opts.squashfs,
                &parts[i],
                i == 0,
            )
        })?;
    } else {
        let mut files = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let dest = part_name(i);
            let img = dir.join(dest.trim_start_matches('/'));
            squashfs::build_part(closure, opts.root, &img, &opts.squashfs, part, i == 0)?;
            files.push(FileSpec { src: img, dest });
        }
        initrd::build(&initrd_path, opts.prepend_initrd, &files, &opts.initrd)?;
        for f in &files {
            std::fs::remove_file(&f.src).with_context(|| format!("cannot remove {}", f.src))?;
        }
    }

    let kernel = std::fs::read(opts.kernel)
        .with_context(|| format!("cannot read kernel {}", opts.kernel))?;
    write_file(&dir.join("bzImage"), &kernel, 0o644)?;

    let spec = BootSpec::new(toplevel, opts.kernel_params)
        .with_initrd(&initrd_path)?
        .with_kernel(&dir.join("bzImage"))?;
    write_file(
        &dir.join(KEXEC_BOOT),
        script::kexec_boot(&spec)?.as_bytes(),
        0o755,
    )?;
    if ipxe {
        write_file(
            &dir.join("netboot.ipxe"),
            script::netboot_ipxe(&spec, "bzImage", "initrd.gz")?.as_bytes(),
            0o644,
        )?;
    }
    for (name, src) in &opts.tools {
        let bytes = std::fs::read(src).with_context(|| format!("cannot read --{name} {src}"))?;
        write_file(&dir.join(name), &bytes, 0o755)?;
    }
    std::fs::create_dir(dir.join("bin")).with_context(|| format!("cannot create {dir}/bin"))?;
    // Whatever the umask: the tree is served by other users.
    std::fs::set_permissions(dir.join("bin"), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {dir}/bin"))?;
    write_file(
        &dir.join("bin/nixos-kexec"),
        script::NIXOS_KEXEC.as_bytes(),
        0o755,
    )?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {dir}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_image_refuses_a_store_that_needs_more_and_names_the_option() {
        assert_eq!(parts_refusal(StoreParts::One, 1), None);
        insta::assert_snapshot!(
            parts_refusal(StoreParts::One, 3).expect("refused"),
            @"the store needs 3 squashfs images: a newc cpio holds files up to 4 GiB. With the NixOS module, set nixosKexec.storeParts = 3 (mkkexec: --store-parts 3), which mounts every part in stage 1; or pass --split-store when the system's own stage 1 mounts every /nix-store*.squashfs as a lower layer of the /nix/store overlay. Nothing was compressed"
        );
    }

    #[test]
    fn store_parts_refuses_a_store_that_needs_more_and_says_what_to_set() {
        assert_eq!(parts_refusal(StoreParts::Exactly(3), 3), None);
        assert_eq!(parts_refusal(StoreParts::Exactly(4), 1), None);
        insta::assert_snapshot!(
            parts_refusal(StoreParts::Exactly(2), 3).expect("refused"),
            @"the store needs 3 squashfs images (a newc cpio holds files up to 4 GiB), but --store-parts is 2: set nixosKexec.storeParts = 3 in the NixOS module (mkkexec: --store-parts 3). Nothing was compressed"
        );
    }

    #[test]
    fn split_store_takes_as_many_as_needed() {
        assert_eq!(parts_refusal(StoreParts::AsNeeded, 7), None);
    }
}
