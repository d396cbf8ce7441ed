//! The tarballs of a tree for a host without Nix, in one of two layouts.
//!
//! [`Layout::Root`], to unpack at `/`:
//!
//! ```text
//! nixos-kexec/bin/nixos-kexec   runs ../kexec-boot
//! nixos-kexec/bzImage, initrd.gz, kexec-boot, netboot.ipxe
//!                               (the last when the tree has it)
//! nixos-kexec/kexec, ip         static tools, when given or in the tree
//!                               (kexec-boot uses them first)
//! ```
//!
//! [`Layout::KexecInstaller`], nixos-anywhere's `--kexec` tarball, which it
//! unpacks in `$HOME/kexec` and runs as `kexec/run --kexec-extra-flags …`
//! (the layout of nixos-images' kexec-installer,
//! <https://github.com/nix-community/nixos-images>):
//!
//! ```text
//! kexec/run                     kexec-boot itself (it finds the rest beside it)
//! kexec/bzImage, initrd.gz
//! kexec/kexec, ip               static tools, when given or in the tree
//! ```
//!
//! Deterministic: fixed order, mtime 1, owner 0:0, gzip header without a
//! time or name.

use std::fs::File;
use std::io::{self, Read};

use anyhow::{Context, Result, bail};
use camino::Utf8Path;

use super::tree::{FILES, KEXEC_BOOT, NETBOOT_IPXE, TOOLS};
use crate::output::{AtomicFile, Tracked};

fn header(path: &str, mode: u32, size: u64, kind: tar::EntryType) -> Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)
        .with_context(|| format!("bad tar path {path}"))?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(size);
    h.set_cksum();
    Ok(h)
}

/// Where a tarball puts the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `nixos-kexec/…`, to unpack at `/`: run `/nixos-kexec/bin/nixos-kexec`.
    Root,
    /// `kexec/run`, `kexec/bzImage`, … for nixos-anywhere's `--kexec`.
    KexecInstaller,
}

impl Layout {
    /// The directory everything goes in.
    fn dir(self) -> &'static str {
        match self {
            Layout::Root => "nixos-kexec",
            Layout::KexecInstaller => "kexec",
        }
    }

    /// Where a file of the tree goes below [`Layout::dir`], if at all.
    fn place(self, file: &str) -> Option<&str> {
        match self {
            Layout::Root => Some(file),
            // nixos-anywhere runs kexec/run; kexec-boot finds the kernel,
            // the initrd and the tools beside itself under any name.
            Layout::KexecInstaller => match file {
                KEXEC_BOOT => Some("run"),
                "bin/nixos-kexec" | NETBOOT_IPXE => None,
                f => Some(f),
            },
        }
    }
}

pub fn build(
    tree: &Utf8Path,
    output: &Utf8Path,
    tools: &[(&str, &Utf8Path)],
    level: u32,
    layout: Layout,
) -> Result<()> {
    // What the tree holds: every file but netboot.ipxe, which `tree` leaves
    // out when iPXE cannot carry the kernel parameters (kexec-boot, what the
    // tarball is for, does not need it).
    let files: Vec<(&str, u32)> = FILES
        .into_iter()
        .filter(|(f, _)| *f != NETBOOT_IPXE || tree.join(f).exists())
        .collect();
    for (f, _) in &files {
        if !tree.join(f).is_file() {
            bail!("{tree} is not a kexec tree: {f} is missing (make one with `mkkexec tree`)");
        }
    }
    let top = layout.dir();
    let out = AtomicFile::create(output)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::new(level));
    let mut tar = tar::Builder::new(gz);
    let dir = |tar: &mut tar::Builder<_>, p: &str| -> Result<()> {
        tar.append(
            &header(p, 0o755, 0, tar::EntryType::Directory)?,
            io::empty(),
        )
        .with_context(|| format!("cannot write {output}"))
    };
    let file = |tar: &mut tar::Builder<_>,
                p: &str,
                mode: u32,
                size: u64,
                data: &mut dyn Read|
     -> Result<()> {
        tar.append(&header(p, mode, size, tar::EntryType::Regular)?, data)
            .with_context(|| format!("cannot write {output}"))
    };
    dir(&mut tar, &format!("{top}/"))?;
    if layout == Layout::Root {
        dir(&mut tar, &format!("{top}/bin/"))?;
    }
    let mut add = |src: &Utf8Path, dest: &str, mode: u32| -> Result<()> {
        let f = File::open(src).with_context(|| format!("cannot open {src}"))?;
        let size = f
            .metadata()
            .with_context(|| format!("cannot read {src}"))?
            .len();
        let mut f = Tracked::new(f);
        file(&mut tar, &format!("{top}/{dest}"), mode, size, &mut f).map_err(|e| {
            if f.failed {
                anyhow::anyhow!("cannot read {src}: {}", e.root_cause())
            } else {
                e
            }
        })
    };
    for (f, mode) in files {
        if let Some(dest) = layout.place(f) {
            add(&tree.join(f), dest, mode)?;
        }
    }
    // The tools given, else the tree's own.
    for name in TOOLS {
        let given = tools.iter().find(|(n, _)| *n == name);
        let src = given.map_or_else(|| tree.join(name), |(_, p)| p.to_path_buf());
        if given.is_some() || src.is_file() {
            add(&src, name, 0o755)?;
        }
    }
    let gz = tar
        .into_inner()
        .with_context(|| format!("cannot write {output}"))?;
    gz.finish()
        .with_context(|| format!("cannot write {output}"))?
        .commit()
}
