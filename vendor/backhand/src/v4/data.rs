//! File Data

use no_std_io2::io::{Read, Seek, SeekFrom, Write};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use deku::prelude::*;
use solana_nohash_hasher::IntMap;
use xxhash_rust::xxh3::Xxh3;

use crate::error::BackhandError;
use crate::v4::filesystem::writer::FilesystemCompressor;
use crate::v4::fragment::Fragment;
use crate::v4::reader::WriteSeek;

use crate::v4::filesystem::reader::SquashfsRawData;
use crate::SquashfsFileWriter;

// bitflag for data size field in inode for signifying that the data is uncompressed
const DATA_STORED_UNCOMPRESSED: u32 = 1 << 24;

#[derive(Copy, Clone, Debug, PartialEq, Eq, DekuRead, DekuWrite, DekuSize)]
#[deku(endian = "endian", ctx = "endian: deku::ctx::Endian")]
pub struct DataSize(u32);
impl DataSize {
    #[inline]
    pub fn new(size: u32, uncompressed: bool) -> Self {
        let mut value: u32 = size;
        if value > DATA_STORED_UNCOMPRESSED {
            panic!("value is too big");
        }
        if uncompressed {
            value |= DATA_STORED_UNCOMPRESSED;
        }
        Self(value)
    }

    #[inline]
    pub fn new_compressed(size: u32) -> Self {
        Self::new(size, false)
    }

    #[inline]
    pub fn new_uncompressed(size: u32) -> Self {
        Self::new(size, true)
    }

    /// A block of all zeros, with no bytes stored in the image
    #[inline]
    pub const fn hole() -> Self {
        Self(0)
    }

    #[inline]
    pub fn uncompressed(&self) -> bool {
        self.0 & DATA_STORED_UNCOMPRESSED != 0
    }

    #[inline]
    pub fn set_uncompressed(&mut self) {
        self.0 |= DATA_STORED_UNCOMPRESSED
    }

    #[inline]
    pub fn set_compressed(&mut self) {
        self.0 &= !DATA_STORED_UNCOMPRESSED
    }

    #[inline]
    pub fn size(&self) -> u32 {
        self.0 & !DATA_STORED_UNCOMPRESSED
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    // Only Data was added. `sparse` is the number of bytes stored as holes.
    Data { blocks_start: u64, block_sizes: Vec<DataSize>, sparse: u64 },
    // Only Fragment was added
    Fragment { frag_index: u32, block_offset: u32 },
}

struct DataWriterChunkReader<R: std::io::Read> {
    chunk: Vec<u8>,
    file_len: usize,
    reader: R,
}
impl<R: std::io::Read> DataWriterChunkReader<R> {
    pub fn read_chunk(&mut self) -> std::io::Result<&[u8]> {
        use std::io::ErrorKind;
        let mut buf: &mut [u8] = &mut self.chunk;
        let mut read_len = 0;
        while !buf.is_empty() {
            match self.reader.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    read_len += n;
                    let tmp = buf;
                    buf = &mut tmp[n..];
                }
                Err(ref e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.file_len += read_len;
        Ok(&self.chunk[..read_len])
    }
}

/// What the parallel path has queued for writing, in image order.
/// (nixos-kexec patch)
enum Item {
    /// An empty file: no data, its `blocks_start` where the writer is.
    Empty(usize),
    /// The blocks of one file follow.
    Start,
    /// A block of zeros, stored as a hole.
    Hole,
    /// A data block, compressed by job `seq`.
    Block(u64),
    /// The file ends: deduplicate it now that its hash is known.
    End { index: usize, len: usize, hash: u128, sparse: u64 },
    /// A file held whole and found to be a duplicate of file `original`.
    Duplicate { index: usize, original: usize },
    /// A full fragment block, compressed by job `seq`.
    Fragments(u64),
}

/// The compression jobs' results: (the block, its compressed form).
#[allow(clippy::type_complexity)]
struct Done {
    results: Mutex<HashMap<u64, (Vec<u8>, Result<Vec<u8>, BackhandError>)>>,
    ready: Condvar,
}

struct Pipe {
    tx: SyncSender<(u64, Vec<u8>)>,
    queue: VecDeque<Item>,
    seq: u64,
    /// Compression jobs submitted and not yet written.
    in_flight: usize,
    window: usize,
    /// Fragment blocks submitted so far: the next one's index.
    frags: u32,
    /// The first file of each length and hash read, with blocks.
    seen: HashMap<(usize, u128), usize>,
    /// The block buffer files are read into.
    buf: Vec<u8>,
}

/// How much of a file is held to find out whether it is a duplicate.
const HOLD: usize = 64 << 20;

impl Pipe {
    /// A data block: a hole, or compressed ahead.
    fn block(&mut self, chunk: Vec<u8>) -> Result<(), BackhandError> {
        if chunk.iter().all(|byte| *byte == 0) {
            self.queue.push_back(Item::Hole);
            Ok(())
        } else {
            self.submit(chunk, Item::Block)
        }
    }

    fn submit(&mut self, block: Vec<u8>, item: fn(u64) -> Item) -> Result<(), BackhandError> {
        let seq = self.seq;
        self.seq += 1;
        self.tx.send((seq, block)).map_err(|_| BackhandError::MutexPoisoned)?;
        self.queue.push_back(item(seq));
        self.in_flight += 1;
        Ok(())
    }
}

/// Write `raw` compressed, or as is when compression did not shrink it.
fn store<W: Write>(writer: &mut W, raw: &[u8], compressed: Vec<u8>) -> Result<DataSize, BackhandError> {
    Ok(if compressed.len() > raw.len() {
        writer.write_all(raw)?;
        DataSize::new_uncompressed(raw.len() as u32)
    } else {
        writer.write_all(&compressed)?;
        DataSize::new_compressed(compressed.len() as u32)
    })
}

pub(crate) struct DataWriter<'a> {
    compressor: &'a (
            dyn crate::traits::CompressionAction<
        Compressor = super::compressor::Compressor,
        FilesystemCompressor = FilesystemCompressor,
        SuperBlock = super::squashfs::SuperBlock,
        Error = crate::BackhandError,
    > + Send
                + Sync
        ),
    block_size: u32,
    fs_compressor: FilesystemCompressor,
    /// If some, cache of HashMap<file_len, HashMap<hash of whole file, (file_len, Added)>>
    #[allow(clippy::type_complexity)]
    dup_cache: Option<IntMap<u64, HashMap<u128, (usize, Added)>>>,
    /// Un-written fragment_bytes
    pub(crate) fragment_bytes: Vec<u8>,
    pub(crate) fragment_table: Vec<Fragment>,
    /// The parallel path's file being written: blocks_start, block sizes.
    current: (u64, Vec<DataSize>),
}

impl<'a> DataWriter<'a> {
    pub fn new(
        compressor: &'a (
                dyn crate::traits::CompressionAction<
            Compressor = super::compressor::Compressor,
            FilesystemCompressor = FilesystemCompressor,
            SuperBlock = super::squashfs::SuperBlock,
            Error = crate::BackhandError,
        > + Send
                    + Sync
            ),
        fs_compressor: FilesystemCompressor,
        block_size: u32,
        no_duplicate_files: bool,
    ) -> Self {
        Self {
            compressor,
            block_size,
            fs_compressor,
            dup_cache: no_duplicate_files.then_some(HashMap::default()),
            fragment_bytes: Vec::with_capacity(block_size as usize),
            fragment_table: vec![],
            current: (0, vec![]),
        }
    }

    /// Add to data writer, either a pre-compressed Data or Fragment
    // TODO: support tail-end fragments (off by default in squashfs-tools/mksquashfs)
    pub(crate) fn just_copy_it<W: WriteSeek>(
        &mut self,
        mut reader: SquashfsRawData,
        mut writer: W,
    ) -> Result<(usize, Added), BackhandError> {
        //just clone it, because block sizes where never modified, just copy it
        let source = reader.file;
        let mut block_sizes = source.block_sizes().to_vec();
        let sparse = source.sparse();
        let mut read_buf = vec![];
        let mut decompress_buf = vec![];

        // if the first block is not full (fragment), store only a fragment
        // otherwise processed to store blocks
        let blocks_start = writer.stream_position()?;
        // Older backhand versions gave an empty file a fragment, do not copy that
        if source.file_len() == 0 {
            return Ok((0, Added::Data { blocks_start, block_sizes: vec![], sparse: 0 }));
        }
        let first_block = match reader.next_block(&mut read_buf) {
            Some(Ok(first_block)) => first_block,
            Some(Err(x)) => return Err(x),
            None => return Ok((0, Added::Data { blocks_start, block_sizes, sparse })),
        };

        // write and early return if fragment
        if first_block.fragment {
            reader.decompress(first_block, &mut read_buf, &mut decompress_buf)?;
            // if this doesn't fit in the current fragment bytes
            // compress the current fragment bytes and add to data_bytes
            if (decompress_buf.len() + self.fragment_bytes.len()) > self.block_size as usize {
                self.finalize(writer)?;
            }
            // add to fragment bytes
            let frag_index = self.fragment_table.len() as u32;
            let block_offset = self.fragment_bytes.len() as u32;
            self.fragment_bytes.write_all(&decompress_buf)?;

            return Ok((decompress_buf.len(), Added::Fragment { frag_index, block_offset }));
        }

        // The reader gives a hole as a block of zeros, but a hole has no bytes in the image
        let mut is_hole = source.block_sizes().iter().map(|size| size.size() == 0);
        let mut copy_block = |writer: &mut W, raw: &[u8]| -> Result<(), BackhandError> {
            if is_hole.next() != Some(true) {
                writer.write_all(raw)?;
            }
            Ok(())
        };

        copy_block(&mut writer, &read_buf)?;
        while let Some(block) = reader.next_block(&mut read_buf) {
            let block = block?;
            if block.fragment {
                reader.decompress(block, &mut read_buf, &mut decompress_buf)?;
                // TODO: support tail-end fragments, for now just treat it like a block
                let cb = self.compressor.compress(
                    &decompress_buf,
                    self.fs_compressor,
                    self.block_size,
                )?;
                // compression didn't reduce size
                if cb.len() > decompress_buf.len() {
                    // store uncompressed
                    block_sizes.push(DataSize::new_uncompressed(decompress_buf.len() as u32));
                    writer.write_all(&decompress_buf)?;
                } else {
                    // store compressed
                    block_sizes.push(DataSize::new_compressed(cb.len() as u32));
                    writer.write_all(&cb)?;
                }
            } else {
                copy_block(&mut writer, &read_buf)?;
            }
        }
        let file_size = source.file_len();
        Ok((file_size, Added::Data { blocks_start, block_sizes, sparse }))
    }

    /// Add to data writer, either a Data or Fragment
    ///
    /// If `self.dup_cache` is on, return alrady added `(usize, Added)` if duplicate
    /// is found
    // TODO: support tail-end fragments (off by default in squashfs-tools/mksquashfs)
    pub(crate) fn add_bytes<W: WriteSeek>(
        &mut self,
        reader: impl Read,
        mut writer: W,
    ) -> Result<(usize, Added), BackhandError> {
        let mut chunk_reader = DataWriterChunkReader {
            chunk: vec![0u8; self.block_size as usize],
            file_len: 0,
            reader,
        };

        // read entire chunk (file)
        let mut chunk = chunk_reader.read_chunk()?;

        // an empty file must carry no fragment reference: a zero-byte
        // fragment entry makes the kernel squashfs driver reject the inode
        // with EINVAL on stat/open (Added::Data with no blocks encodes
        // frag_index 0xffffffff, matching mksquashfs)
        if chunk.is_empty() {
            let blocks_start = writer.stream_position()?;
            return Ok((0, Added::Data { blocks_start, block_sizes: vec![], sparse: 0 }));
        }

        // chunk size not exactly the size of the block
        if chunk.len() != self.block_size as usize {
            // A file that fits in a fragment, like one made of blocks, is stored
            // once: an identical earlier file's fragment entry is shared, as
            // mksquashfs does. (nixos-kexec patch)
            let len = chunk.len();
            let digest = xxhash_rust::xxh3::xxh3_128(chunk);
            if let Some(dup_cache) = &self.dup_cache {
                if let Some(original) = dup_cache.get(&(len as u64)).and_then(|m| m.get(&digest)) {
                    trace!("duplicate fragment data found");
                    return Ok(original.clone());
                }
            }

            // if this doesn't fit in the current fragment bytes
            // compress the current fragment bytes and add to data_bytes
            if (chunk.len() + self.fragment_bytes.len()) > self.block_size as usize {
                self.finalize(writer)?;
            }

            // add to fragment bytes
            let frag_index = self.fragment_table.len() as u32;
            let block_offset = self.fragment_bytes.len() as u32;
            self.fragment_bytes.write_all(chunk)?;

            let added = (chunk_reader.file_len, Added::Fragment { frag_index, block_offset });
            if let Some(dup_cache) = &mut self.dup_cache {
                dup_cache.entry(len as u64).or_default().insert(digest, added.clone());
            }
            return Ok(added);
        }

        // Add to data bytes
        let blocks_start = writer.stream_position()?;
        let mut block_sizes = vec![];

        // 128 bits: duplicates are found by hash alone. (nixos-kexec patch)
        let mut hasher = Xxh3::new();
        let mut sparse = 0;
        while !chunk.is_empty() {
            if chunk.iter().all(|byte| *byte == 0) {
                // like mksquashfs, store a block of zeros as a hole
                block_sizes.push(DataSize::hole());
                sparse += chunk.len() as u64;
            } else {
                let cb = self.compressor.compress(chunk, self.fs_compressor, self.block_size)?;

                // compression didn't reduce size
                if cb.len() > chunk.len() {
                    // store uncompressed
                    block_sizes.push(DataSize::new_uncompressed(chunk.len() as u32));
                    writer.write_all(chunk)?;
                } else {
                    // store compressed
                    block_sizes.push(DataSize::new_compressed(cb.len() as u32));
                    writer.write_all(&cb)?;
                }
            }
            hasher.update(chunk);
            chunk = chunk_reader.read_chunk()?;
        }

        let added = (chunk_reader.file_len, Added::Data { blocks_start, block_sizes, sparse });
        let Some(dup_cache) = &mut self.dup_cache else {
            return Ok(added);
        };

        // The hash is known only after the whole file is read. Thus, like mksquashfs, write the
        // data first, then seek back so that the next data writes over a duplicate.
        let files_with_len = dup_cache.entry(chunk_reader.file_len as u64).or_default();
        match files_with_len.entry(hasher.digest128()) {
            Entry::Occupied(original) => {
                trace!("duplicate file data found");
                writer.seek(SeekFrom::Start(blocks_start))?;
                Ok(original.get().clone())
            }
            Entry::Vacant(entry) => Ok(entry.insert(added).clone()),
        }
    }

    /// Add `files` in order, their blocks compressed on `jobs` threads, and
    /// make each a [`SquashfsFileWriter::Consumed`]. (nixos-kexec patch,
    /// backhand issue 279.)
    ///
    /// The image is the one [`Self::add_bytes`] writes file by file: the same
    /// bytes in the same places, whatever `jobs` is. Reading, fragment
    /// packing, deduplication and writing stay on this thread, in order;
    /// only the compression of full blocks and fragment blocks runs ahead,
    /// at most a window of blocks, on scoped worker threads. `files` must not
    /// hold a [`SquashfsFileWriter::SquashfsFile`] (its copy path writes
    /// directly).
    pub(crate) fn add_files_parallel<W: WriteSeek>(
        &mut self,
        files: &mut [&mut SquashfsFileWriter<'_, '_, '_>],
        mut writer: W,
        jobs: usize,
    ) -> Result<(), BackhandError> {
        let mut out: Vec<Option<(usize, Added)>> = vec![None; files.len()];
        let done = Done { results: Mutex::new(HashMap::new()), ready: Condvar::new() };
        let (compressor, fc, block_size) = (self.compressor, self.fs_compressor, self.block_size);
        let window = 4 * jobs + 4;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(2 * jobs);
        let rx = Mutex::new(rx);
        std::thread::scope(|scope| -> Result<(), BackhandError> {
            for _ in 0..jobs {
                let (rx, done) = (&rx, &done);
                scope.spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, raw)) = job else { return };
                    let compressed = compressor.compress(&raw, fc, block_size);
                    let Ok(mut results) = done.results.lock() else { return };
                    results.insert(seq, (raw, compressed));
                    done.ready.notify_all();
                });
            }
            let frags = self.fragment_table.len() as u32;
            let mut p = Pipe {
                tx,
                queue: VecDeque::new(),
                seq: 0,
                in_flight: 0,
                window,
                frags,
                seen: HashMap::new(),
                buf: vec![],
            };
            let result = self.read_files(files, &mut p, &done, &mut writer, &mut out);
            // Workers end when the channel closes, also on an error.
            drop(p.tx);
            result?;
            self.drain(&mut p.queue, &done, &mut writer, &mut out, usize::MAX)?;
            p.in_flight = 0;
            Ok(())
        })?;
        for (file, added) in files.iter_mut().zip(out) {
            let (len, added) = added.expect("every file was written");
            **file = SquashfsFileWriter::Consumed(len, added);
        }
        Ok(())
    }

    fn read_files<W: WriteSeek>(
        &mut self,
        files: &mut [&mut SquashfsFileWriter<'_, '_, '_>],
        p: &mut Pipe,
        done: &Done,
        writer: &mut W,
        out: &mut [Option<(usize, Added)>],
    ) -> Result<(), BackhandError> {
        for (index, file) in files.iter_mut().enumerate() {
            match &mut **file {
                SquashfsFileWriter::UserDefined(file) => {
                    let file = Arc::clone(file);
                    let mut file = file.lock().map_err(|_| BackhandError::MutexPoisoned)?;
                    self.read_file(&mut *file, index, p, done, writer, out)?;
                }
                SquashfsFileWriter::LazyFile(lazy) => {
                    let mut reader = lazy.open()?;
                    self.read_file(&mut reader, index, p, done, writer, out)?;
                }
                SquashfsFileWriter::SquashfsFile(_) | SquashfsFileWriter::Consumed(..) => {
                    unreachable!("add_files_parallel takes files to read")
                }
            }
        }
        Ok(())
    }

    /// One file, as [`Self::add_bytes`] adds it, with its blocks queued.
    fn read_file<W: WriteSeek>(
        &mut self,
        reader: impl Read,
        index: usize,
        p: &mut Pipe,
        done: &Done,
        writer: &mut W,
        out: &mut [Option<(usize, Added)>],
    ) -> Result<(), BackhandError> {
        // One block buffer for every file: a store has many small ones.
        let mut chunk = std::mem::take(&mut p.buf);
        chunk.resize(self.block_size as usize, 0);
        let mut chunk_reader = DataWriterChunkReader { chunk, file_len: 0, reader };
        let result = self.read_chunks(&mut chunk_reader, index, p, done, writer, out);
        p.buf = chunk_reader.chunk;
        result
    }

    fn read_chunks<W: WriteSeek>(
        &mut self,
        chunk_reader: &mut DataWriterChunkReader<impl Read>,
        index: usize,
        p: &mut Pipe,
        done: &Done,
        writer: &mut W,
        out: &mut [Option<(usize, Added)>],
    ) -> Result<(), BackhandError> {
        let chunk = chunk_reader.read_chunk()?;
        if chunk.is_empty() {
            p.queue.push_back(Item::Empty(index));
            return Ok(());
        }
        if chunk.len() != self.block_size as usize {
            let len = chunk.len();
            let digest = xxhash_rust::xxh3::xxh3_128(chunk);
            if let Some(original) = self
                .dup_cache
                .as_ref()
                .and_then(|c| c.get(&(len as u64)))
                .and_then(|m| m.get(&digest))
            {
                out[index] = Some(original.clone());
                return Ok(());
            }
            if len + self.fragment_bytes.len() > self.block_size as usize {
                let full = std::mem::replace(
                    &mut self.fragment_bytes,
                    Vec::with_capacity(self.block_size as usize),
                );
                p.submit(full, Item::Fragments)?;
                p.frags += 1;
            }
            let frag_index = p.frags;
            let block_offset = self.fragment_bytes.len() as u32;
            self.fragment_bytes.extend_from_slice(chunk);
            let added = (len, Added::Fragment { frag_index, block_offset });
            if let Some(dup_cache) = &mut self.dup_cache {
                dup_cache.entry(len as u64).or_default().insert(digest, added.clone());
            }
            out[index] = Some(added);
            return self.pump(p, done, writer, out);
        }
        // The blocks of a file up to HOLD bytes are held until its hash says
        // whether it is a duplicate: one is then neither compressed nor
        // written. A longer file is compressed and written as it is read,
        // and sought back over at its end if it is one.
        let mut hasher = Xxh3::new();
        let mut sparse = 0;
        let mut held = vec![];
        let mut streaming = false;
        let mut chunk = chunk.to_vec();
        while !chunk.is_empty() {
            hasher.update(&chunk);
            if chunk.iter().all(|byte| *byte == 0) {
                sparse += chunk.len() as u64;
            }
            if streaming {
                p.block(chunk)?;
                self.pump(p, done, writer, out)?;
            } else {
                held.push(chunk);
                if held.len() * self.block_size as usize > HOLD {
                    streaming = true;
                    p.queue.push_back(Item::Start);
                    for chunk in held.drain(..) {
                        p.block(chunk)?;
                        self.pump(p, done, writer, out)?;
                    }
                }
            }
            chunk = chunk_reader.read_chunk()?.to_vec();
        }
        let (len, hash) = (chunk_reader.file_len, hasher.digest128());
        if !streaming {
            let original = self.dup_cache.as_ref().and_then(|_| p.seen.get(&(len, hash)));
            if let Some(&original) = original {
                p.queue.push_back(Item::Duplicate { index, original });
                return Ok(());
            }
            p.queue.push_back(Item::Start);
            for chunk in held {
                p.block(chunk)?;
                self.pump(p, done, writer, out)?;
            }
        }
        p.seen.entry((len, hash)).or_insert(index);
        p.queue.push_back(Item::End { index, len, hash, sparse });
        Ok(())
    }

    /// Write what is ready, and wait until at most a window of blocks is in flight.
    fn pump<W: WriteSeek>(
        &mut self,
        p: &mut Pipe,
        done: &Done,
        writer: &mut W,
        out: &mut [Option<(usize, Added)>],
    ) -> Result<(), BackhandError> {
        let over = p.in_flight.saturating_sub(p.window);
        p.in_flight -= self.drain(&mut p.queue, done, writer, out, over)?;
        Ok(())
    }

    /// Write the queue's head in order: everything whose compression is
    /// done, and at least `at_least` compressed blocks (waiting for them).
    /// Returns the number of compressed blocks written.
    fn drain<W: WriteSeek>(
        &mut self,
        queue: &mut VecDeque<Item>,
        done: &Done,
        writer: &mut W,
        out: &mut [Option<(usize, Added)>],
        at_least: usize,
    ) -> Result<usize, BackhandError> {
        let mut written = 0;
        while let Some(item) = queue.front() {
            let compressed = match *item {
                Item::Block(seq) | Item::Fragments(seq) => {
                    let mut results = done.results.lock().map_err(|_| BackhandError::MutexPoisoned)?;
                    loop {
                        if let Some(r) = results.remove(&seq) {
                            break Some(r);
                        }
                        if written >= at_least {
                            return Ok(written);
                        }
                        results = done.ready.wait(results).map_err(|_| BackhandError::MutexPoisoned)?;
                    }
                }
                _ => None,
            };
            let Some(item) = queue.pop_front() else { break };
            match (item, compressed) {
                (Item::Empty(index), _) => {
                    let blocks_start = writer.stream_position()?;
                    out[index] = Some((0, Added::Data { blocks_start, block_sizes: vec![], sparse: 0 }));
                }
                (Item::Start, _) => {
                    self.current = (writer.stream_position()?, vec![]);
                }
                (Item::Hole, _) => self.current.1.push(DataSize::hole()),
                (Item::Block(_), Some((raw, compressed))) => {
                    let size = store(writer, &raw, compressed?)?;
                    self.current.1.push(size);
                    written += 1;
                }
                (Item::Fragments(_), Some((raw, compressed))) => {
                    let start = writer.stream_position()?;
                    let size = store(writer, &raw, compressed?)?;
                    self.fragment_table.push(Fragment::new(start, size, 0));
                    written += 1;
                }
                (Item::End { index, len, hash, sparse }, _) => {
                    let (blocks_start, block_sizes) = std::mem::take(&mut self.current);
                    let added = (len, Added::Data { blocks_start, block_sizes, sparse });
                    out[index] = Some(match &mut self.dup_cache {
                        None => added,
                        Some(dup_cache) => match dup_cache.entry(len as u64).or_default().entry(hash) {
                            Entry::Occupied(original) => {
                                writer.seek(SeekFrom::Start(blocks_start))?;
                                original.get().clone()
                            }
                            Entry::Vacant(entry) => entry.insert(added).clone(),
                        },
                    });
                }
                (Item::Duplicate { index, original }, _) => out[index] = out[original].clone(),
                (Item::Block(_) | Item::Fragments(_), None) => unreachable!(),
            }
        }
        Ok(written)
    }

    /// Compress the fragments that were under length, write to data, add to fragment table, clear
    /// current fragment_bytes
    pub fn finalize<W: Write + Seek>(&mut self, mut writer: W) -> Result<(), BackhandError> {
        let start = writer.stream_position()?;
        let cb =
            self.compressor.compress(&self.fragment_bytes, self.fs_compressor, self.block_size)?;

        // compression didn't reduce size
        let size = if cb.len() > self.fragment_bytes.len() {
            // store uncompressed
            writer.write_all(&self.fragment_bytes)?;
            DataSize::new_uncompressed(self.fragment_bytes.len() as u32)
        } else {
            // store compressed
            writer.write_all(&cb)?;
            DataSize::new_compressed(cb.len() as u32)
        };
        self.fragment_table.push(Fragment::new(start, size, 0));
        self.fragment_bytes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::{
        DEFAULT_BLOCK_SIZE,
        compression::{Compressor, DefaultCompressor},
    };

    #[test]
    #[cfg(feature = "gzip")]
    fn test_duplicate_check() {
        let mut data_writer = DataWriter::new(
            &DefaultCompressor,
            FilesystemCompressor::new(Compressor::Gzip, None).unwrap(),
            DEFAULT_BLOCK_SIZE,
            true,
        );
        let bytes = [0xff_u8; DEFAULT_BLOCK_SIZE as usize * 2];
        let mut writer = Cursor::new(vec![]);
        let added_1 = data_writer.add_bytes(&bytes[..], &mut writer).unwrap();
        let added_2 = data_writer.add_bytes(&bytes[..], &mut writer).unwrap();
        assert_eq!(added_1, added_2);
    }

    #[test]
    #[cfg(feature = "gzip")]
    fn test_no_duplicate_check() {
        let mut data_writer = DataWriter::new(
            &DefaultCompressor,
            FilesystemCompressor::new(Compressor::Gzip, None).unwrap(),
            DEFAULT_BLOCK_SIZE,
            false,
        );
        let bytes = [0xff_u8; DEFAULT_BLOCK_SIZE as usize * 2];
        let mut writer = Cursor::new(vec![]);
        let added_1 = data_writer.add_bytes(&bytes[..], &mut writer).unwrap();
        let added_2 = data_writer.add_bytes(&bytes[..], &mut writer).unwrap();
        assert_ne!(added_1, added_2);
    }
}
