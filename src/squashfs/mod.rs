//! The Nix store as a squashfs image, laid out as nixpkgs'
//! `nixos/lib/make-squashfs.nix` lays it out (mksquashfs with
//! `-keep-as-directory -all-root -no-hardlinks`):
//!
//! ```text
//! /                       0755, root:root
//! /nix-path-registration  the closure, for `nix-store --load-db` at boot
//! /<hash>-<name>          each store path: a directory, file or symlink
//! ```
//!
//! Every inode is owned by 0:0 with mtime 1; file modes are kept; symlinks are
//! stored, never followed; identical files are stored once. Writing is done by
//! backhand (vendor/backhand: its writer compresses blocks on `jobs` threads)
//! with [`codec::MkCompressor`].
//! Spec: <https://dr-emann.github.io/squashfs/>

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, bail};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemWriter, NodeHeader};
use camino::Utf8Path;

mod cache;
mod codec;

use cache::BlockCache;
pub use codec::{Codec, DEFAULT_BLOCK_SIZE, SquashfsCompression};
use codec::{MkCompressor, NO_CACHE};

use crate::nix::closure::Closure;
use crate::nix::nar::{self, NarStream};
use crate::nix::registration::PathInfo;
use crate::output::AtomicFile;
use crate::progress::{Counters, Progress, mib};

/// How to build the image.
#[derive(Debug, Clone)]
pub struct Options {
    pub codec: Codec,
    pub jobs: u32,
    pub quiet: bool,
    /// `--cache`: compressed blocks kept here and reused.
    pub cache: Option<PathBuf>,
    /// `--cache-max-bytes`: the cache's size after the build.
    pub cache_max_bytes: Option<u64>,
}

/// A source file that failed while the image was written. backhand hands
/// it back inside its `StdIo` error, from which [`write_error`] takes it out:
/// the fault is the file's, not the output's.
#[derive(Debug)]
struct SourceFault {
    path: PathBuf,
    what: String,
}

impl std::fmt::Display for SourceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.path.display(), self.what)
    }
}

impl std::error::Error for SourceFault {}

/// Opens its file at the first read and closes it at the end, so that only
/// one file is open at a time; counts progress; names the file in errors.
struct LazyReader {
    path: PathBuf,
    size: u64,
    read: u64,
    file: Option<File>,
    done: bool,
    counters: Arc<Counters>,
    /// The NAR of the store path this file is in, and the file's number in it.
    nar: Arc<Mutex<NarStream>>,
    nar_id: usize,
}

impl LazyReader {
    fn fault(&self, kind: io::ErrorKind, what: String) -> io::Error {
        io::Error::new(
            kind,
            SourceFault {
                path: self.path.clone(),
                what,
            },
        )
    }
}

impl Read for LazyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cannot_read = |this: &Self, e: io::Error| {
            this.fault(
                e.kind(),
                format!(
                    " cannot be read while the image is written ({e}); make it readable to \
                     this user, or rebuild the store path"
                ),
            )
        };
        if self.done {
            return Ok(0);
        }
        if self.file.is_none() {
            let f = File::open(&self.path).map_err(|e| cannot_read(self, e))?;
            self.file = Some(f);
            self.counters.add_file();
            lock(&self.nar).begin(self.nar_id);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let n = match file.read(buf) {
            Ok(n) => n,
            Err(e) => return Err(cannot_read(self, e)),
        };
        self.read += n as u64;
        self.counters.add_bytes(n as u64);
        lock(&self.nar).data(buf.get(..n).unwrap_or_default());
        if n == 0 {
            self.file = None;
            self.done = true;
            if self.read != self.size {
                let how = if self.read > self.size {
                    "grew"
                } else {
                    "shrank"
                };
                return Err(self.fault(
                    io::ErrorKind::InvalidData,
                    format!(
                        " changed while it was read: it {how} from {} to {} bytes. Something \
                         writes to it, or its size is not its content (a /proc or /sys file); \
                         pack a store that nothing changes",
                        self.size, self.read
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// backhand's error as the cause it stands for: its `StdIo` says "std io
/// error: X" and has X as its source, which would print X twice.
fn backhand_error(e: BackhandError) -> anyhow::Error {
    match e {
        BackhandError::StdIo(io) => anyhow::Error::new(io),
        other => anyhow::Error::new(other),
    }
}

/// What failed while the image was written: a source file (named, and
/// blamed alone) or the output.
fn write_error(e: BackhandError, what: &str) -> anyhow::Error {
    if let BackhandError::StdIo(io) = &e
        && let Some(fault) = io.get_ref().and_then(|i| i.downcast_ref::<SourceFault>())
    {
        return anyhow::anyhow!("{fault}");
    }
    backhand_error(e).context(format!("cannot write {what}"))
}

/// Totals found while walking the closure.
#[derive(Default, Debug)]
struct Stats {
    files: u64,
    bytes: u64,
}

struct Walker {
    fs: FilesystemWriter<'static, 'static, 'static>,
    counters: Arc<Counters>,
    stats: Stats,
    /// The NAR of the store path being walked.
    nar: Arc<Mutex<NarStream>>,
}

/// A stream's lock; a reader that panicked holding it left nothing a hash
/// could not survive (a broken stream falls back to the disk).
fn lock(m: &Mutex<NarStream>) -> std::sync::MutexGuard<'_, NarStream> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn header(perm: u32) -> NodeHeader {
    NodeHeader::new((perm & 0o7777) as u16, 0, 0, 1)
}

impl Walker {
    /// Add `src` at `dest` in the image, recursing into directories in
    /// byte order of their names (the NAR's order), and its NAR tokens to
    /// `self.nar`.
    fn add(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let meta = std::fs::symlink_metadata(src)
            .with_context(|| format!("cannot stat {}", src.display()))?;
        let ft = meta.file_type();
        let h = header(meta.permissions().mode());
        let ctx = || format!("cannot add {} to the image", src.display());
        if ft.is_symlink() {
            let target = std::fs::read_link(src)
                .with_context(|| format!("cannot read symlink {}", src.display()))?;
            nar::symlink(lock(&self.nar).tokens(), target.as_os_str().as_bytes());
            self.fs
                .push_symlink(target, dest, h)
                .map_err(backhand_error)
                .with_context(ctx)?;
        } else if ft.is_file() {
            let size = meta.len();
            let nar_id = {
                let mut n = lock(&self.nar);
                nar::file_start(
                    n.tokens(),
                    nar::is_executable(meta.permissions().mode()),
                    size,
                );
                let id = n.file(size);
                nar::file_end(n.tokens(), size);
                id
            };
            let reader = LazyReader {
                path: src.to_owned(),
                size,
                read: 0,
                file: None,
                done: false,
                counters: Arc::clone(&self.counters),
                nar: Arc::clone(&self.nar),
                nar_id,
            };
            self.fs
                .push_file(reader, dest, h)
                .map_err(backhand_error)
                .with_context(ctx)?;
            self.stats.files += 1;
            self.stats.bytes += size;
        } else if ft.is_dir() {
            self.fs
                .push_dir(dest, h)
                .map_err(backhand_error)
                .with_context(ctx)?;
            let mut entries = std::fs::read_dir(src)
                .with_context(|| format!("cannot list {}", src.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
                .with_context(|| format!("cannot list {}", src.display()))?;
            entries.sort();
            nar::dir_start(lock(&self.nar).tokens());
            for name in entries {
                nar::entry_start(lock(&self.nar).tokens(), name.as_bytes());
                self.add(&src.join(&name), &dest.join(&name))?;
                nar::close(lock(&self.nar).tokens());
            }
            nar::close(lock(&self.nar).tokens());
        } else {
            let kind = if ft.is_fifo() {
                "a fifo"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device"
            } else {
                "of an unknown type"
            };
            bail!(
                "{} is {kind}; a Nix store holds only files, directories and symlinks",
                src.display()
            );
        }
        Ok(())
    }
}

/// Refuse the image when a store path's NAR hash or size is not the
/// closure's: its registration would lie about the store it comes with.
/// Each stream was fed while backhand read the files; one fed out of order
/// is hashed again from disk.
fn check_nar_hashes(
    closure: &Closure,
    infos: &[&PathInfo],
    root: &Utf8Path,
    nars: Vec<Arc<Mutex<NarStream>>>,
) -> Result<()> {
    let mut wrong = Vec::new();
    for (info, stream) in infos.iter().zip(nars) {
        let stream = std::mem::take(&mut *lock(&stream));
        let (hash, size) = match stream.finish() {
            Some(h) => h,
            None => {
                let src = closure.source(root, &info.path);
                nar::hash_path(src.as_std_path())
                    .with_context(|| format!("cannot hash {} again", info.path))?
            }
        };
        if hash != info.nar_hash || size != info.nar_size {
            wrong.push(format!(
                "{}: its contents hash to {} ({size} bytes as a NAR), but {} says {} \
                 ({} bytes)",
                info.path,
                closure.show_hash(&hash),
                closure.name(),
                closure.show_hash(&info.nar_hash),
                info.nar_size
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{}\nthe store differs from the closure's registration{}: it was changed after the \
             closure was taken, or --root {root} is another store; repair the store \
             (nix-store --verify --check-contents --repair) or take the closure again from it. \
             No image was written",
            wrong.join("\n"),
            if wrong.len() > 1 {
                format!(" in {} store paths", wrong.len())
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The largest file a newc cpio holds (its size field is 32 bits): each
/// image of a split store stays at or below it.
pub const NEWC_LIMIT: u64 = u32::MAX as u64;

/// What an image holds besides its store paths, at most: the superblock,
/// compression options, the id, fragment and lookup tables, the root
/// directory and the padding to 4 KiB.
const IMAGE_FIXED: u64 = 8192;

/// At most what one store path adds to an image beyond its NAR size. Data
/// blocks and metadata blocks are stored as is when compression does not
/// shrink them, so no byte of input grows; each inode, directory entry and
/// block-list word has a larger counterpart in the NAR (whose every token is
/// at least 16 bytes), except the path's own entry in the root directory
/// (up to 12 + 8 + 211 bytes for the name) and the 4-byte block-list words
/// and 2-byte metadata headers, which the 1/64 slack covers.
fn path_bound(nar_size: u64) -> u64 {
    nar_size.saturating_add(nar_size / 64).saturating_add(512)
}

/// Split `closure` into parts whose images are each at most `limit` bytes,
/// by an upper bound on each image known before compressing (the
/// fixed part, the registration, each path's NAR size and a margin): the store paths in sorted order, each part filled greedily,
/// the first one carrying `nix-path-registration`. The same closure and limit
/// always give the same parts. Each part is a list of indices into
/// `closure.paths`. Fails, naming the path, when one store path alone cannot
/// fit.
pub fn split(closure: &Closure, limit: u64) -> Result<Vec<Vec<usize>>> {
    let registration = closure.registration().len() as u64;
    let mut parts: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = IMAGE_FIXED.saturating_add(registration);
    for (i, info) in closure.paths.iter().enumerate() {
        let add = path_bound(info.nar_size);
        let fits = |size: u64| size.saturating_add(add) <= limit;
        let empty = parts.last().is_none_or(Vec::is_empty);
        if !fits(size) && !empty {
            parts.push(Vec::new());
            size = IMAGE_FIXED;
        }
        if !fits(size) {
            bail!(
                "{} ({} bytes as a NAR) cannot fit one squashfs image of at most {limit} bytes \
                 (a newc cpio holds files up to 4 GiB; its image may take up to {} bytes); \
                 a store path this large cannot be packed into an initrd",
                info.path,
                info.nar_size,
                size.saturating_add(add)
            );
        }
        size += add;
        if let Some(part) = parts.last_mut() {
            part.push(i);
        }
    }
    Ok(parts)
}

/// Build the image of `closure`, whose store lies below `root`, at `output`.
pub fn build(closure: &Closure, root: &Utf8Path, output: &Utf8Path, opts: &Options) -> Result<()> {
    closure.check_present(root)?;
    let all: Vec<usize> = (0..closure.paths.len()).collect();
    build_part(closure, root, output, opts, &all, true)
}

/// Build the image of the store paths of `closure` numbered `part` at
/// `output`, with `nix-path-registration` (of the whole closure) when
/// `registration`.
pub fn build_part(
    closure: &Closure,
    root: &Utf8Path,
    output: &Utf8Path,
    opts: &Options,
    part: &[usize],
    registration: bool,
) -> Result<()> {
    let mut out = AtomicFile::create(output)?;
    let len = write_part(
        closure,
        root,
        &mut out,
        0,
        &format!("squashfs {output}"),
        opts,
        part,
        registration,
    )?;
    // backhand writes a duplicate file's data, then seeks back over it; when
    // that was the last data, stale bytes stay past the image's end.
    out.truncate(len)?;
    out.commit()
}

/// Write the image of [`build_part`] into `out` from `offset` on (inside an
/// uncompressed initrd, say) and return its length; `what` names it in
/// errors. Bytes past `offset` + the length may be stale: the caller writes
/// over them or cuts them off.
#[allow(clippy::too_many_arguments)]
pub fn write_part<W: io::Write + io::Seek>(
    closure: &Closure,
    root: &Utf8Path,
    out: &mut W,
    offset: u64,
    what: &str,
    opts: &Options,
    part: &[usize],
    registration: bool,
) -> Result<u64> {
    let infos: Vec<&PathInfo> = part.iter().filter_map(|&i| closure.paths.get(i)).collect();

    let counters = Arc::new(Counters::default());
    let mut fs = FilesystemWriter::default();
    fs.set_compressor(opts.codec.fs);
    fs.set_emit_compression_options(opts.codec.emits_options());
    fs.set_block_size(opts.codec.block_size);
    fs.set_time(1);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_only_root_id();
    fs.set_no_duplicate_files(true);
    let mut w = Walker {
        fs,
        counters: Arc::clone(&counters),
        stats: Stats::default(),
        nar: Arc::default(),
    };

    if registration {
        let reg_name = Path::new("nix-path-registration");
        let registration = closure.registration().into_bytes();
        w.fs.push_file(io::Cursor::new(registration), reg_name, header(0o644))
            .map_err(backhand_error)
            .context("cannot add nix-path-registration")?;
    }
    let mut nars = Vec::with_capacity(infos.len());
    for info in &infos {
        let src = closure.source(root, &info.path);
        w.nar = Arc::default();
        nar::archive_start(lock(&w.nar).tokens());
        w.add(src.as_std_path(), Path::new(info.path.base_name()))?;
        nars.push(Arc::clone(&w.nar));
    }
    let Walker { mut fs, stats, .. } = w;

    let cache = match &opts.cache {
        Some(dir) => Some(Arc::new(BlockCache::open(
            dir,
            opts.codec.cache_settings(),
        )?)),
        None => None,
    };
    // backhand wants the compressor `'static`: one per build with a cache,
    // alive until the process ends.
    let compressor: &'static MkCompressor = match &cache {
        Some(c) => Box::leak(Box::new(MkCompressor(Some(Arc::clone(c))))),
        None => &NO_CACHE,
    };
    fs.set_kind(Kind::new_v4(compressor));
    fs.set_jobs(opts.jobs as usize);

    let progress = Progress::start("squashfs", opts.quiet, counters, stats.files, stats.bytes);
    let (_, len) = fs
        .write_with_offset(&mut *out, offset)
        .map_err(|e| write_error(e, what))?;
    drop(progress);
    drop(fs);
    check_nar_hashes(closure, &infos, root, nars)?;
    let mut cache_line = String::new();
    if let (Some(c), Some(dir)) = (&cache, &opts.cache) {
        cache_line = format!(", {}", c.summary());
        if let Some(max) = opts.cache_max_bytes {
            let n = cache::trim(dir, max)?;
            if n > 0 {
                cache_line += &format!(", {n} oldest entries removed to stay within {max} bytes");
            }
        }
    }
    if !opts.quiet {
        eprintln!(
            "squashfs: {} store paths, {} files, {} → {}{cache_line}",
            infos.len(),
            stats.files,
            mib(stats.bytes),
            mib(len)
        );
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::hash::NixHash;
    use crate::nix::store_path::StorePath;

    const H: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

    /// A closure of paths named by their NAR sizes, given in a scrambled
    /// order (the closure sorts them).
    fn closure(sizes: &[u64]) -> Closure {
        let paths = sizes
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &size)| PathInfo {
                path: StorePath::from_absolute_path(&format!("/nix/store/{i:032}-p{size}"))
                    .expect("store path"),
                nar_hash: NixHash::parse_nar(H).expect("hash"),
                nar_size: size,
                deriver: None,
                references: Vec::new(),
            })
            .collect();
        Closure::new(paths).expect("closure")
    }

    fn reg(c: &Closure) -> u64 {
        c.registration().len() as u64
    }

    #[test]
    fn one_part_when_the_store_fits() {
        let c = closure(&[1000, 2000, 3000]);
        assert_eq!(split(&c, NEWC_LIMIT).expect("split"), [vec![0, 1, 2]]);
    }

    #[test]
    fn split_greedily_in_sorted_order_and_registration_in_the_first() {
        let c = closure(&[100_000, 100_000, 100_000, 100_000, 100_000]);
        // Room for two paths beside the registration, then for two more.
        let limit = IMAGE_FIXED + reg(&c) + 2 * path_bound(100_000);
        let parts = split(&c, limit).expect("split");
        assert_eq!(parts, [vec![0, 1], vec![2, 3], vec![4]]);
        // The same closure, the same parts.
        assert_eq!(split(&c, limit).expect("split"), parts);
        // The registration counts in the first part only: one byte less and
        // the first part holds one path.
        let parts = split(&c, limit - 1).expect("split");
        assert_eq!(parts, [vec![0], vec![1, 2], vec![3, 4]]);
    }

    #[test]
    fn a_path_too_large_for_one_image_is_refused_before_compressing() {
        let c = closure(&[1000, 5 << 30, 1000]);
        let e = split(&c, NEWC_LIMIT).expect_err("too large");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("-p5368709120 (5368709120 bytes as a NAR) cannot fit one squashfs image"),
            "{msg}"
        );
    }
}
