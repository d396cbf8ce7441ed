//! Squashfs block compression, in parallel ahead of backhand's writer.
//!
//! backhand writes the image in one thread and compresses each block when it
//! reaches it, which leaves all but one core idle at zstd-19 or xz. Here a
//! reader thread walks the files in the order backhand will (the image's
//! sorted order), cuts them into the blocks backhand will make (full blocks,
//! tails, and fragment blocks packed from small files exactly as
//! `DataWriter::add_bytes` packs them), and worker threads compress those
//! blocks into a cache keyed by content. When backhand asks [`MkCompressor`]
//! to compress a block, the answer is usually waiting. The bytes are the same
//! as without the pipeline: a block's compressed form depends only on its
//! contents. A block nobody prepared is compressed on the spot.
//!
//! Two kinds of work are skipped altogether:
//! - identical blocks (duplicate files, which backhand compresses before it
//!   notices the duplicate) are compressed once;
//! - with zstd, a block that zstd at level 1 cannot shrink at all is not
//!   tried at the slow level: backhand stores it as is, which it would almost
//!   surely have done anyway (mksquashfs tries the slow level; measured, the
//!   image is no larger than mksquashfs's). xz is always tried: it gains a
//!   little on such blocks (0.2% of the image on /usr).
//!
//! Memory stays bounded: the reader stays at most a window of bytes ahead of
//! what backhand has read.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

use super::codec::{Codec, SquashfsCompression, give_up};
use crate::progress::Counters;

type Key = (u64, u128);

fn key(bytes: &[u8]) -> Key {
    (bytes.len() as u64, xxhash_rust::xxh3::xxh3_128(bytes))
}

enum Slot {
    /// A worker is compressing it.
    Pending,
    /// Compressed; `None`: not compressible, backhand stores it as is.
    Done(Option<Arc<Vec<u8>>>),
}

/// Compressed blocks kept after their last expected use, so that a
/// duplicate file a little further on is not compressed again.
const RETAIN_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Cache {
    /// Each block with the number of requests still expected for it.
    slots: HashMap<Key, (Slot, usize)>,
    retired: VecDeque<(Key, usize)>,
    retired_bytes: usize,
}

impl Cache {
    fn retire(&mut self, k: Key, size: usize) {
        self.retired.push_back((k, size));
        self.retired_bytes += size;
        while self.retired_bytes > RETAIN_BYTES {
            let Some((old, size)) = self.retired.pop_front() else {
                break;
            };
            self.retired_bytes -= size;
            if matches!(self.slots.get(&old), Some((_, 0))) {
                self.slots.remove(&old);
            }
        }
    }
}

struct Shared {
    codec: Codec,
    /// Blocks backhand found compressed ahead, and compressed itself.
    hits: AtomicU64,
    misses: AtomicU64,
    cache: Mutex<Cache>,
    ready: Condvar,
}

/// The [`CompressionAction`] handed to backhand.
pub struct MkCompressor {
    shared: Arc<Shared>,
}

impl CompressionAction for MkCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        c: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, c)
    }

    fn compress(
        &self,
        bytes: &[u8],
        _fc: FilesystemCompressor,
        _block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        // The codec's own compressor options: the ones the superblock got.
        let k = key(bytes);
        let poisoned = |_| BackhandError::MutexPoisoned;
        let mut cache = self.shared.cache.lock().map_err(poisoned)?;
        loop {
            match cache.slots.get_mut(&k) {
                None => break,
                Some((Slot::Pending, _)) => {
                    cache = self.shared.ready.wait(cache).map_err(poisoned)?;
                }
                Some((Slot::Done(out), uses)) => {
                    self.shared.hits.fetch_add(1, Ordering::Relaxed);
                    let out = out.as_ref().map(Arc::clone);
                    *uses = uses.saturating_sub(1);
                    if *uses == 0 {
                        cache.retire(k, out.as_ref().map_or(0, |o| o.len()));
                    }
                    return Ok(match out {
                        Some(out) => Arc::unwrap_or_clone(out),
                        None => give_up(bytes),
                    });
                }
            }
        }
        drop(cache);
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.shared.codec.compress(bytes)
    }

    fn compression_options(
        &self,
        sb: &mut SuperBlock,
        kind: &Kind,
        fc: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(sb, kind, fc)
    }
}

/// What the reader feeds: a file on disk or bytes in memory, in image order.
pub enum Source {
    Path(PathBuf),
    Bytes(Arc<Vec<u8>>),
}

/// The running pipeline; stops its threads when dropped.
pub struct Pipeline {
    pub compressor: &'static MkCompressor,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Start `jobs` workers preparing the blocks of `files` (in image order).
    /// `consumed` counts the bytes backhand has read so far.
    pub fn start(codec: Codec, jobs: u32, files: Vec<Source>, consumed: Arc<Counters>) -> Self {
        let shared = Arc::new(Shared {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            codec,
            cache: Mutex::new(Cache::default()),
            ready: Condvar::new(),
        });
        // backhand wants the compressor for the program's lifetime; one per image.
        let compressor: &'static MkCompressor = Box::leak(Box::new(MkCompressor {
            shared: Arc::clone(&shared),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        let parallel = jobs > 1
            && matches!(
                codec.compression,
                SquashfsCompression::Zstd | SquashfsCompression::Xz
            );
        if parallel {
            let (tx, rx) = sync_channel::<Vec<u8>>(2 * jobs as usize);
            let rx = Arc::new(Mutex::new(rx));
            let window = (64u64 << 20).max(4 * jobs as u64 * codec.block_size as u64);
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                read_ahead(
                    files,
                    codec.block_size as usize,
                    window,
                    &consumed,
                    &s,
                    |block| tx.send(block).is_ok(),
                )
            }));
            for _ in 0..jobs {
                let (rx, shared, stop) = (Arc::clone(&rx), Arc::clone(&shared), Arc::clone(&stop));
                threads.push(std::thread::spawn(move || work(&rx, &shared, &stop)));
            }
        }
        Pipeline {
            compressor,
            stop,
            threads,
        }
    }

    /// (blocks found compressed ahead, blocks compressed on the spot)
    pub fn hits_misses(&self) -> (u64, u64) {
        let s = &self.compressor.shared;
        (
            s.hits.load(Ordering::Relaxed),
            s.misses.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The compressor itself lives on (backhand wanted it 'static); its cache need not.
        if let Ok(mut cache) = self.compressor.shared.cache.lock() {
            *cache = Cache::default();
        }
    }
}

fn work(rx: &Mutex<Receiver<Vec<u8>>>, shared: &Shared, stop: &AtomicBool) {
    loop {
        let block = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if stop.load(Ordering::Relaxed) {
            // backhand is done: empty the channel without compressing.
            continue;
        }
        let k = key(&block);
        {
            let Ok(mut cache) = shared.cache.lock() else {
                return;
            };
            if let Some((_, uses)) = cache.slots.get_mut(&k) {
                // The same block again (a duplicate file): compressed once.
                *uses += 1;
                continue;
            }
            cache.slots.insert(k, (Slot::Pending, 1));
        }
        let result = shared.codec.compress(&block);
        let Ok(mut cache) = shared.cache.lock() else {
            return;
        };
        match result {
            Ok(out) => {
                let out = (out.len() <= block.len()).then(|| Arc::new(out));
                if let Some(slot) = cache.slots.get_mut(&k) {
                    slot.0 = Slot::Done(out);
                }
            }
            // Leave the error to backhand, which compresses the block itself.
            Err(_) => {
                cache.slots.remove(&k);
            }
        }
        shared.ready.notify_all();
    }
}

/// Cut `files` into the blocks backhand's `DataWriter` will compress, in
/// its order, and hand each to `send`.
fn read_ahead(
    files: Vec<Source>,
    block_size: usize,
    window: u64,
    consumed: &Counters,
    stop: &AtomicBool,
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let mut fragment: Vec<u8> = Vec::with_capacity(block_size);
    // Small files already in a fragment: the patched backhand shares their entry.
    let mut small_seen = std::collections::HashSet::new();
    let mut submitted = 0u64;
    for source in files {
        let mut reader: Box<dyn Read> = match source {
            Source::Path(p) => match File::open(&p) {
                Ok(f) => Box::new(f),
                // backhand reports the error when it gets there.
                Err(_) => return,
            },
            Source::Bytes(b) => Box::new(std::io::Cursor::new(b.to_vec())),
        };
        let mut first = true;
        loop {
            // Stay within the window ahead of backhand.
            while submitted > consumed.bytes.load(Ordering::Relaxed) + window {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut chunk = vec![0u8; block_size];
            let n = match read_full(&mut reader, &mut chunk) {
                Ok(n) => n,
                Err(_) => return,
            };
            chunk.truncate(n);
            submitted += n as u64;
            if first && n < block_size {
                // A small file goes into the fragment block, as in add_bytes.
                if n > 0 && small_seen.insert(key(&chunk)) {
                    if fragment.len() + n > block_size {
                        let full = std::mem::replace(&mut fragment, Vec::with_capacity(block_size));
                        if !send(full) {
                            return;
                        }
                    }
                    fragment.extend_from_slice(&chunk);
                }
                break;
            }
            first = false;
            if n == 0 {
                break;
            }
            // backhand stores a block of zeros as a hole, uncompressed; and a
            // block it has read already it has compressed itself.
            let behind = submitted < consumed.bytes.load(Ordering::Relaxed);
            if !behind && chunk.iter().any(|&b| b != 0) && !send(chunk) {
                return;
            }
            if n < block_size {
                break;
            }
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
