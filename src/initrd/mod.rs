//! Initrds as the kernel unpacks them: the prepended initrds byte for byte
//! (as nixpkgs' makeInitrd `prepend` does), zero padding to a 4-byte
//! boundary, then one compressed newc cpio of the given files.
//!
//! The cpio is reproducible: entries sorted, parents before children,
//! owned by 0:0, mtime 1, modes 0755 (directories, executables) or 0644.
//! See `Documentation/filesystems/ramfs-rootfs-initramfs.rst`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

mod codec;
mod newc;
mod scan;

pub use codec::{Codec, InitrdCompression};
pub use scan::{check_prepend, extract, scan, unpacked_size};

use crate::output::{AtomicFile, Tracked};
use crate::progress::{Counters, Counting, Progress};
use codec::Encoder;
use newc::NewcWriter;

/// A file to put into the initrd: `src` on disk, `dest` inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub src: Utf8PathBuf,
    pub dest: String,
}

impl std::str::FromStr for FileSpec {
    type Err = String;

    /// `SRC:DEST`, split at the last `:` so a source may contain colons.
    fn from_str(s: &str) -> Result<Self, String> {
        let (src, dest) = s.rsplit_once(':').ok_or_else(|| {
            format!("{s:?} is not SRC:DEST (e.g. ./squashfs.img:/nix-store.squashfs)")
        })?;
        if src.is_empty() || dest.is_empty() {
            return Err(format!("{s:?} is not SRC:DEST: both parts are needed"));
        }
        Ok(FileSpec {
            src: src.into(),
            dest: dest.to_owned(),
        })
    }
}

pub struct Options {
    pub codec: Codec,
    pub jobs: u32,
    pub quiet: bool,
}

enum Entry {
    Dir,
    File {
        src: Utf8PathBuf,
        perm: u32,
        size: u64,
    },
}

/// `dest` as a cpio name: relative, no `.`/`..`/empty components.
fn normalize(dest: &str) -> Result<String> {
    let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        bail!("destination {dest:?} must be a path like /nix-store.squashfs, without . or ..");
    }
    Ok(parts.join("/"))
}

fn plan(files: &[FileSpec]) -> Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    for f in files {
        let name = normalize(&f.dest)?;
        let meta = std::fs::metadata(&f.src).with_context(|| format!("cannot read {}", f.src))?;
        if !meta.is_file() {
            bail!("{} is not a regular file; --file takes files only", f.src);
        }
        let mut parent = name.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            match entries.get(p) {
                Some(Entry::File { src, .. }) => {
                    bail!("{p} is both the file {src} and a directory")
                }
                _ => entries.insert(p.to_owned(), Entry::Dir),
            };
            parent = p;
        }
        // Only "executable or not" is kept: the same file from the Nix store
        // (0444/0555) and from a build directory (0644/0755) gives the same initrd.
        let perm = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let entry = Entry::File {
            src: f.src.clone(),
            perm,
            size: meta.len(),
        };
        if entries.insert(name.clone(), entry).is_some() {
            bail!("/{name} is given twice (or is also a directory)");
        }
    }
    Ok(entries)
}

/// `output` with `prepend` copied into it and padded for the cpio that
/// follows.
fn start(output: &Utf8Path, prepend: &[Utf8PathBuf]) -> Result<AtomicFile> {
    for p in prepend {
        check_prepend(p)?;
    }
    let mut out = AtomicFile::create(output)?;
    let mut offset = 0u64;
    for p in prepend {
        let f = File::open(p).with_context(|| format!("cannot open initrd {p} to prepend"))?;
        let mut f = Tracked::new(f);
        offset += io::copy(&mut f, &mut out).with_context(|| {
            if f.failed {
                format!("cannot read initrd {p} to prepend")
            } else {
                format!("cannot write {output}")
            }
        })?;
    }
    // The kernel finds an uncompressed cpio only at a 4-byte boundary, and
    // skips the zeros between members.
    let pad = (4 - offset % 4) % 4;
    out.write_all(&[0u8; 3][..pad as usize])
        .with_context(|| format!("cannot write {output}"))?;
    Ok(out)
}

/// What [`build`] writes with no compression for files of mode 0644 at
/// `dests` (at the initrd's root), each written in place by `write` instead
/// of copied from a file: the tree's store images, which so need no room of
/// their own on disk first. `write(i, out, at)` writes the file `dests[i]`
/// into `out`, which is at offset `at`, and returns how many bytes it
/// wrote.
pub fn build_in_place(
    output: &Utf8Path,
    prepend: &[Utf8PathBuf],
    dests: &[String],
    mut write: impl FnMut(usize, &mut AtomicFile, u64) -> Result<u64>,
) -> Result<()> {
    let mut named = Vec::with_capacity(dests.len());
    for (i, dest) in dests.iter().enumerate() {
        let name = normalize(dest)?;
        if name.contains('/') {
            bail!("{dest} is not at the initrd's root");
        }
        named.push((name, i));
    }
    // The order `build` writes them in.
    named.sort();
    let cannot_write = || format!("cannot write {output}");
    let mut cpio = NewcWriter::new(start(output, prepend)?);
    for (name, i) in named {
        // The writer's own errors say what they were writing; the cpio's
        // (a header, a full disk) are said of the initrd.
        let mut theirs = false;
        cpio.file_in_place(&name, 0o644, |w, at| {
            write(i, w, at).inspect_err(|_| theirs = true)
        })
        .map_err(|e| if theirs { e } else { e.context(cannot_write()) })?;
    }
    let mut out = cpio.finish().with_context(cannot_write)?;
    // Past the trailer: what a writer in place may have left beyond its end.
    let len = out.stream_position().with_context(cannot_write)?;
    out.truncate(len)?;
    out.commit()
}

/// Write `files` as a compressed cpio after `prepend` into `output`.
pub fn build(
    output: &Utf8Path,
    prepend: &[Utf8PathBuf],
    files: &[FileSpec],
    opts: &Options,
) -> Result<()> {
    let entries = plan(files)?;
    let out = start(output, prepend)?;
    let cannot_write = || format!("cannot write {output}");

    let total: u64 = entries
        .values()
        .map(|e| {
            if let Entry::File { size, .. } = e {
                *size
            } else {
                0
            }
        })
        .sum();
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(
        "initrd",
        opts.quiet,
        Arc::clone(&counters),
        files.len() as u64,
        total,
    );
    let encoder = Encoder::new(out, opts.codec, opts.jobs)?;
    let mut cpio = NewcWriter::new(encoder);
    for (name, entry) in &entries {
        match entry {
            Entry::Dir => cpio.dir(name, 0o755).with_context(cannot_write)?,
            Entry::File { src, perm, size } => {
                let f = File::open(src).with_context(|| format!("cannot open {src}"))?;
                let mut r = Tracked::new(Counting {
                    inner: f,
                    counters: Arc::clone(&counters),
                });
                cpio.file(name, *perm, *size, &mut r).map_err(|e| {
                    // A read error, a write error (a full disk), or the
                    // file's size not matching its content.
                    let what = if r.failed {
                        format!("cannot read {src}")
                    } else if e.downcast_ref::<io::Error>().is_some() {
                        cannot_write()
                    } else {
                        format!("cannot archive {src}")
                    };
                    e.context(what)
                })?;
                counters.add_file();
            }
        }
    }
    let out = cpio
        .finish()
        .with_context(cannot_write)?
        .finish()
        .with_context(cannot_write)?;
    drop(progress);
    out.commit()
}
