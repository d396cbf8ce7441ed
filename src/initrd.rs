//! Initrds as the kernel unpacks them: the prepended initrds byte for byte
//! (as nixpkgs' makeInitrd `prepend` does), zero padding to a 4-byte
//! boundary, then one compressed newc cpio of the given files.
//!
//! The cpio is reproducible: entries sorted, parents before children,
//! owned by 0:0, mtime 1, modes 0755 (directories, executables) or 0644.
//! See `Documentation/filesystems/ramfs-rootfs-initramfs.rst`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::compress::{Encoder, InitrdCompression};
use crate::newc::NewcWriter;
use crate::output::AtomicFile;
use crate::progress::{Counters, Progress};

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
    pub compression: InitrdCompression,
    pub level: u32,
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

/// A reader that counts the bytes read (progress, offsets).
struct Counting<R> {
    inner: R,
    counters: Arc<Counters>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.add_bytes(n as u64);
        Ok(n)
    }
}

/// Check that `path` is an initrd the kernel can unpack: a regular file
/// whose first member (after zero padding) is a newc cpio or a compression
/// the kernel knows. Its content is checked later, by the kernel.
pub fn check_prepend(path: &Utf8Path) -> Result<()> {
    let what = "the initrd to prepend (NixOS' stage 1, a microcode cpio, …)";
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open initrd {path} to prepend"))?;
    if !meta.is_file() {
        bail!("{path} is not a regular file; pass {what}");
    }
    let mut head = Vec::with_capacity(8);
    let mut r = BufReader::new(File::open(path).with_context(|| format!("cannot open {path}"))?);
    loop {
        let buf = r
            .fill_buf()
            .with_context(|| format!("cannot read {path}"))?;
        if buf.is_empty() && head.is_empty() {
            bail!("{path} is empty or only zeros; pass {what}");
        }
        if buf.is_empty() {
            break;
        }
        let zeros = if head.is_empty() {
            buf.iter().take_while(|&&b| b == 0).count()
        } else {
            0
        };
        let take = (buf.len() - zeros).min(8 - head.len());
        head.extend_from_slice(&buf[zeros..zeros + take]);
        let n = zeros + take;
        r.consume(n);
        if head.len() == 8 {
            break;
        }
    }
    if crate::compress::sniff(&head).is_none() {
        bail!(
            "{path} is not an initrd: it starts with neither a newc cpio header nor a \
             compression the kernel unpacks (gzip, zstd, xz, lzma, lz4, bzip2); pass {what}"
        );
    }
    Ok(())
}

/// Write `files` as a compressed cpio after `prepend` into `output`.
pub fn build(
    output: &Utf8Path,
    prepend: &[Utf8PathBuf],
    files: &[FileSpec],
    opts: &Options,
) -> Result<()> {
    for p in prepend {
        check_prepend(p)?;
    }
    let entries = plan(files)?;
    let mut out = AtomicFile::create(output)?;
    let mut offset = 0u64;
    for p in prepend {
        let mut f = File::open(p).with_context(|| format!("cannot open initrd {p} to prepend"))?;
        offset +=
            io::copy(&mut f, &mut out).with_context(|| format!("cannot copy {p} into {output}"))?;
    }
    // The kernel finds an uncompressed cpio only at a 4-byte boundary, and
    // skips the zeros between members.
    let pad = (4 - offset % 4) % 4;
    out.write_all(&[0u8; 3][..pad as usize])?;

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
    let encoder = Encoder::new(out, opts.compression, opts.level, opts.jobs)?;
    let mut cpio = NewcWriter::new(encoder);
    for (name, entry) in &entries {
        match entry {
            Entry::Dir => cpio.dir(name, 0o755)?,
            Entry::File { src, perm, size } => {
                let f = File::open(src).with_context(|| format!("cannot open {src}"))?;
                let r = Counting {
                    inner: f,
                    counters: Arc::clone(&counters),
                };
                cpio.file(name, *perm, *size, r)
                    .with_context(|| format!("cannot archive {src}"))?;
                counters.add_file();
            }
        }
    }
    let out = cpio
        .finish()?
        .finish()
        .with_context(|| format!("cannot compress {output}"))?;
    drop(progress);
    out.commit()
}

/// One member of a concatenated initrd.
#[derive(Debug, Default)]
pub struct Segment {
    pub offset: u64,
    pub compression: &'static str,
    /// name, mode, size
    pub entries: Vec<(String, u32, u64)>,
}

impl Segment {
    pub fn unpacked_size(&self) -> u64 {
        self.entries.iter().map(|e| e.2).sum()
    }
}

/// Read the cpio entries from `r` up to the trailer, then drain `r`.
fn read_cpio(mut r: impl Read, seg: &mut Segment, drain: bool) -> Result<()> {
    loop {
        let e = cpio::NewcReader::new(r).context("not a newc cpio archive")?;
        if e.entry().is_trailer() {
            r = e.finish()?;
            break;
        }
        seg.entries.push((
            e.entry().name().to_owned(),
            e.entry().mode(),
            e.entry().file_size() as u64,
        ));
        r = e.finish()?;
    }
    if drain {
        io::copy(&mut r, &mut io::sink())?;
    }
    Ok(())
}

/// Split an initrd into its members and list each one's entries.
pub fn scan(path: &Utf8Path) -> Result<Vec<Segment>> {
    let f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let read = Arc::new(Counters::default());
    let counting = Counting {
        inner: f,
        counters: Arc::clone(&read),
    };
    let mut r = BufReader::with_capacity(1 << 16, counting);
    let mut segments = vec![];
    loop {
        // Skip the zero padding between members.
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(segments);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            let done = zeros < buf.len();
            r.consume(zeros);
            if done {
                break;
            }
        }
        let offset = read.bytes.load(Ordering::Relaxed) - r.buffer().len() as u64;
        let head = r.fill_buf()?;
        let compression = crate::compress::sniff(head)
            .with_context(|| format!("{path}: unknown data at byte {offset}: not a cpio or a compression the kernel knows"))?;
        let mut seg = Segment {
            offset,
            compression,
            entries: vec![],
        };
        let ctx = || format!("{path}: member at byte {offset} ({compression})");
        match compression {
            "gzip" => read_cpio(flate2::bufread::GzDecoder::new(&mut r), &mut seg, true)
                .with_context(ctx)?,
            "zstd" => {
                let d = zstd::stream::read::Decoder::with_buffer(&mut r)?.single_frame();
                read_cpio(d, &mut seg, true).with_context(ctx)?
            }
            "xz" => read_cpio(liblzma::bufread::XzDecoder::new(&mut r), &mut seg, true)
                .with_context(ctx)?,
            "none (cpio)" => read_cpio(&mut r, &mut seg, false).with_context(ctx)?,
            other => bail!(
                "{path}: member at byte {offset} is {other}, which mkkexec cannot read (the kernel may)"
            ),
        }
        segments.push(seg);
    }
}
