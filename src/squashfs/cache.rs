//! A cache of compressed blocks, shared by builds: `--cache DIR`.
//!
//! Each block backhand compresses is kept under the sha256 of its
//! uncompressed bytes and of everything that decides the compressed bytes
//! ([`super::codec::Codec::cache_settings`]: the compression, level and
//! block size, mkkexec's own choices, the linked zstd's version and the
//! Cargo.lock this binary was built from, which pins every Rust and bundled
//! C compressor). A rebuild takes a block from here instead of compressing
//! it, so the image is the one a cold build writes.
//!
//! ```text
//! DIR/ab/abcdef…   "mkkexec-block-1" (16 bytes), kind (1: 0 bytes as is,
//!                  1 the codec gave up), length (u64 LE), sha256 of the
//!                  bytes (32), the bytes
//! ```
//!
//! An entry is written to a temporary file in its directory and renamed, so
//! concurrent builds may share DIR; one whose header does not match its
//! bytes (damaged, truncated) is a miss, compressed again and replaced.
//! Used entries are touched, so that [`trim`] removes the oldest first.
//! backhand also compresses its metadata blocks through the same call:
//! they are cached alike (and counted).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 16] = b"mkkexec-block-1\0";
const HEADER: usize = 16 + 1 + 8 + 32;

/// A cache directory and what a build took from it.
#[derive(Debug)]
pub struct BlockCache {
    dir: PathBuf,
    /// `dir`'s permissions, given to the directories made in it: a cache
    /// shared by the Nix build users is group-writable (and setgid), which
    /// the umask would take from a new directory.
    dir_mode: u32,
    settings: Vec<u8>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries found damaged, compressed again and replaced.
    pub repaired: AtomicU64,
    tmp: AtomicU64,
}

impl BlockCache {
    /// Open (and create) `dir` for blocks compressed as `settings` say
    /// ([`super::codec::Codec::cache_settings`]).
    pub fn open(dir: &Path, settings: Vec<u8>) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the block cache {}; make it writable or leave out --cache",
                dir.display()
            )
        })?;
        let dir_mode = fs::metadata(dir)
            .with_context(|| format!("cannot stat the block cache {}", dir.display()))?
            .permissions()
            .mode()
            & 0o7777;
        Ok(BlockCache {
            dir: dir.to_owned(),
            dir_mode,
            settings,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            tmp: AtomicU64::new(0),
        })
    }

    fn path(&self, bytes: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(&self.settings);
        h.update(bytes);
        let name = data_encoding::HEXLOWER.encode(&h.finalize());
        self.dir.join(&name[..2]).join(&name)
    }

    /// The compressed block for `bytes`: from the cache, or from `compress`
    /// (then stored).
    pub fn get_or(
        &self,
        bytes: &[u8],
        compress: impl FnOnce() -> io::Result<Vec<u8>>,
    ) -> io::Result<Vec<u8>> {
        let path = self.path(bytes);
        match read_entry(&path, bytes.len()) {
            Entry::Hit(out) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Mark it used for trim(); a cache we may read but not touch
                // still serves.
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                return Ok(out);
            }
            Entry::Damaged => {
                self.repaired.fetch_add(1, Ordering::Relaxed);
            }
            Entry::Missing => {}
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let out = compress()?;
        self.write_entry(&path, bytes.len(), &out).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot write block cache entry {}: {e}; make {} writable by this user \
                     or leave out --cache",
                    path.display(),
                    self.dir.display()
                ),
            )
        })?;
        Ok(out)
    }

    fn write_entry(&self, path: &Path, raw_len: usize, out: &[u8]) -> io::Result<()> {
        let gave_up = out.len() == raw_len + 1 && out.iter().all(|&b| b == 0);
        let body: &[u8] = if gave_up { &[] } else { out };
        let mut e = Vec::with_capacity(HEADER + body.len());
        e.extend_from_slice(MAGIC);
        e.push(u8::from(gave_up));
        e.extend_from_slice(&(body.len() as u64).to_le_bytes());
        e.extend_from_slice(&Sha256::digest(body));
        e.extend_from_slice(body);
        let parent = path.parent().unwrap_or(&self.dir);
        match fs::create_dir(parent) {
            Ok(()) => fs::set_permissions(parent, fs::Permissions::from_mode(self.dir_mode))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&e))
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// One line for the summary.
    pub fn summary(&self) -> String {
        let hits = self.hits.load(Ordering::Relaxed);
        let total = hits + self.misses.load(Ordering::Relaxed);
        let repaired = self.repaired.load(Ordering::Relaxed);
        format!(
            "cache: {hits} of {total} blocks reused{}",
            if repaired > 0 {
                format!(", {repaired} damaged entries replaced")
            } else {
                String::new()
            }
        )
    }
}

enum Entry {
    Hit(Vec<u8>),
    Missing,
    Damaged,
}

fn read_entry(path: &Path, raw_len: usize) -> Entry {
    let mut data = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut data)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Entry::Missing,
        Err(_) => return Entry::Damaged,
    }
    let (Some(head), Some(body)) = (data.get(..HEADER), data.get(HEADER..)) else {
        return Entry::Damaged;
    };
    let len = head.get(17..25).and_then(|b| <[u8; 8]>::try_from(b).ok());
    let ok = head.get(..16) == Some(MAGIC.as_slice())
        && len.map(u64::from_le_bytes) == Some(body.len() as u64)
        && head.get(25..HEADER) == Some(Sha256::digest(body).as_slice());
    match (ok, head.get(16)) {
        (true, Some(0)) if !body.is_empty() => Entry::Hit(body.to_vec()),
        (true, Some(1)) if body.is_empty() => Entry::Hit(vec![0; raw_len + 1]),
        _ => Entry::Damaged,
    }
}

/// Remove the least recently used entries of `dir` until it holds at most
/// `max` bytes; returns the number removed.
pub fn trim(dir: &Path, max: u64) -> Result<u64> {
    let ctx = |p: &Path| format!("cannot list the block cache {}", p.display());
    let mut entries = Vec::new();
    for sub in fs::read_dir(dir).with_context(|| ctx(dir))? {
        let sub = sub.with_context(|| ctx(dir))?.path();
        if !sub.is_dir() {
            continue;
        }
        for e in fs::read_dir(&sub).with_context(|| ctx(&sub))? {
            let e = e.with_context(|| ctx(&sub))?;
            // Another build may remove or rename it meanwhile.
            let Ok(meta) = e.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            entries.push((mtime, meta.len(), e.path()));
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    let mut removed = 0;
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove {} to keep the block cache within {max} bytes; make \
                         {} writable by this user",
                        path.display(),
                        dir.display()
                    )
                });
            }
        }
        total -= len;
    }
    Ok(removed)
}
