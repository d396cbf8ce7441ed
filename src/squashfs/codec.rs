//! The squashfs codec: one value that says how every block of an image is
//! compressed. It writes both the superblock's compressor options (through
//! backhand's [`FilesystemCompressor`]) and the blocks themselves, so the two
//! cannot disagree.

use std::cell::RefCell;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::{BackhandError, CompressionExtra, ExtraXz, FilesystemCompressor};
use clap::ValueEnum;

use super::cache::BlockCache;
use crate::level::Leveled;

/// Compression of the squashfs blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SquashfsCompression {
    Zstd,
    Xz,
    Gzip,
    Lz4,
    /// Every block stored as is (the superblock says gzip, which every
    /// kernel with squashfs reads, but no block is compressed).
    None,
}

impl Leveled for SquashfsCompression {
    const WHAT: &'static str = "squashfs";

    fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            SquashfsCompression::Zstd => 1..=22,
            SquashfsCompression::Xz => 0..=9,
            SquashfsCompression::Gzip => 1..=9,
            SquashfsCompression::Lz4 | SquashfsCompression::None => 0..=0,
        }
    }

    fn default_level(self) -> u32 {
        match self {
            SquashfsCompression::Zstd => 19,
            SquashfsCompression::Xz => 6,
            SquashfsCompression::Gzip => 9,
            SquashfsCompression::Lz4 | SquashfsCompression::None => 0,
        }
    }
}

/// What [`Codec::compress`] decides besides the compressor's own output
/// (today: zstd's fast probe that stores a block as is). Part of a block
/// cache's key: raise it whenever the same bytes, compression and level
/// could come out differently, or a warm cache would hand out blocks of the
/// old choice and a rebuild would differ from a cold build.
pub const REVISION: u32 = 1;

/// The largest block squashfs allows, and nixpkgs' make-squashfs.nix's.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

/// How an image's blocks are compressed: checked once, then used for the
/// superblock and for every block.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub compression: SquashfsCompression,
    pub level: u32,
    pub block_size: u32,
    /// backhand's description of the same: the superblock's options.
    pub fs: FilesystemCompressor,
}

impl Codec {
    /// Check the level and block size, and derive the superblock options.
    pub fn new(
        compression: SquashfsCompression,
        level: Option<u32>,
        block_size: u32,
    ) -> Result<Self> {
        if !(4096..=DEFAULT_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
            bail!(
                "block size {block_size} is invalid: use a power of two from 4096 to 1048576 \
                 (1 MiB, the default)"
            );
        }
        let level = compression.level(level)?;
        Ok(Codec {
            compression,
            level,
            block_size,
            fs: fs_compressor(compression, level, block_size)?,
        })
    }

    /// What decides a compressed block besides its bytes: the key of a
    /// block cache ([`BlockCache`]) holds it.
    pub fn cache_settings(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        format!(
            "compression={:?} level={} block_size={} codec={REVISION} zstd={} lock={}\n",
            self.compression,
            self.level,
            self.block_size,
            zstd::zstd_safe::version_number(),
            data_encoding::HEXLOWER.encode(&Sha256::digest(include_bytes!("../../Cargo.lock"))),
        )
        .into_bytes()
    }

    /// Whether the superblock carries compressor options (not for `none`,
    /// which only borrows gzip's id).
    pub fn emits_options(&self) -> bool {
        self.compression != SquashfsCompression::None
    }

    /// Compress one block; a result longer than `bytes` tells backhand to
    /// store the block as is.
    pub fn compress(&self, bytes: &[u8]) -> Result<Vec<u8>, BackhandError> {
        Ok(match self.compression {
            SquashfsCompression::None => give_up(bytes),
            SquashfsCompression::Gzip | SquashfsCompression::Lz4 => {
                DefaultCompressor.compress(bytes, self.fs, self.block_size)?
            }
            // No probe for xz: it still gains a little where zstd -1 gains
            // nothing (measured: 0.2% of the image).
            SquashfsCompression::Xz => xz_compress(bytes, self.level, self.block_size)?,
            // Incompressible data (already compressed files) costs as much as
            // any other at zstd's slow levels: a fast probe that finds nothing ends it.
            SquashfsCompression::Zstd
                if bytes.len() >= 4096 && zstd_compress(bytes, 1)?.len() >= bytes.len() =>
            {
                give_up(bytes)
            }
            SquashfsCompression::Zstd => zstd_compress(bytes, self.level as i32)?,
        })
    }
}

/// A result backhand will store uncompressed: longer than the input.
/// The codec a [`FilesystemCompressor`] made by [`Codec::new`] stands for:
/// what [`MkCompressor`] reads back from the settings backhand hands it.
fn from_fs(fs: FilesystemCompressor, block_size: u32) -> Option<Codec> {
    use backhand::compression::CompressionOptions as O;
    let (compression, level) = match (fs.id(), fs.compression_options()) {
        (Compressor::Zstd, Some(O::Zstd(z))) => (SquashfsCompression::Zstd, z.compression_level),
        (Compressor::Xz, Some(O::Xz(_))) => (SquashfsCompression::Xz, fs.xz_level()?),
        (Compressor::Gzip, Some(O::Gzip(g))) => (SquashfsCompression::Gzip, g.compression_level),
        (Compressor::Lz4, Some(O::Lz4(_))) => (SquashfsCompression::Lz4, 0),
        (Compressor::Gzip, None) => (SquashfsCompression::None, 0),
        _ => return None,
    };
    Some(Codec {
        compression,
        level,
        block_size,
        fs,
    })
}

/// The [`CompressionAction`] backhand compresses every block with:
/// [`Codec::compress`] of the codec its settings stand for, behind the
/// [`BlockCache`] when the build has one (a block found there is not
/// compressed again). Without a cache it holds nothing, so [`NO_CACHE`]
/// serves every such image (backhand wants it `'static`); backhand calls it
/// from its worker threads.
pub struct MkCompressor(pub Option<Arc<BlockCache>>);

pub static NO_CACHE: MkCompressor = MkCompressor(None);

impl CompressionAction for MkCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = backhand::SuperBlock;

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
        fs: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        let compress = || match from_fs(fs, block_size) {
            Some(codec) => codec.compress(bytes),
            None => DefaultCompressor.compress(bytes, fs, block_size),
        };
        let Some(cache) = &self.0 else {
            return compress();
        };
        Ok(cache.get_or(bytes, || {
            compress().map_err(|e| match e {
                BackhandError::StdIo(io) => io,
                other => std::io::Error::other(other),
            })
        })?)
    }

    fn compression_options(
        &self,
        sb: &mut backhand::SuperBlock,
        kind: &backhand::kind::Kind,
        fs: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(sb, kind, fs)
    }
}

pub fn give_up(bytes: &[u8]) -> Vec<u8> {
    vec![0; bytes.len() + 1]
}

fn fs_compressor(
    compression: SquashfsCompression,
    level: u32,
    block_size: u32,
) -> Result<FilesystemCompressor> {
    use backhand::compression::{CompressionOptions as O, Gzip, Lz4, Xz, Zstd};
    use backhand::v4::compressor::XzFilter;
    let (id, options) = match compression {
        SquashfsCompression::Zstd => (
            Compressor::Zstd,
            Some(O::Zstd(Zstd {
                compression_level: level,
            })),
        ),
        // mksquashfs -comp xz -Xdict-size 100%: the dictionary is a block.
        SquashfsCompression::Xz => (
            Compressor::Xz,
            Some(O::Xz(Xz {
                dictionary_size: block_size,
                filters: XzFilter::new(0),
                bit_opts: None,
                fb: None,
            })),
        ),
        SquashfsCompression::Gzip => (
            Compressor::Gzip,
            Some(O::Gzip(Gzip {
                compression_level: level,
                window_size: 15,
                strategies: 0,
            })),
        ),
        // Version 1 is the only lz4 format the kernel reads (LZ4_LEGACY).
        SquashfsCompression::Lz4 => (
            Compressor::Lz4,
            Some(O::Lz4(Lz4 {
                version: 1,
                flags: 0,
            })),
        ),
        SquashfsCompression::None => (Compressor::Gzip, None),
    };
    let mut fc = FilesystemCompressor::new(id, options).context("invalid compression options")?;
    if compression == SquashfsCompression::Xz {
        let mut xz = ExtraXz::default();
        xz.level(level).context("invalid xz level")?;
        fc.extra(CompressionExtra::Xz(xz))
            .context("invalid xz options")?;
    }
    Ok(fc)
}

thread_local! {
    // A zstd context at level 19 is tens of MiB: make one per thread and
    // level (the fast probe's and the block's), not per block.
    static ZSTD: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
}

fn zstd_compress(bytes: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        let i = match z.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                z.push((level, zstd::bulk::Compressor::new(level)?));
                z.len() - 1
            }
        };
        z[i].1.compress(bytes)
    })
}

fn xz_compress(bytes: &[u8], level: u32, dict_size: u32) -> std::io::Result<Vec<u8>> {
    use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
    let mut opts = LzmaOptions::new_preset(level).map_err(std::io::Error::other)?;
    opts.dict_size(dict_size);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    // The kernel's squashfs xz decoder checks CRC32 at most (as mksquashfs writes).
    let mut stream =
        Stream::new_stream_encoder(&filters, Check::Crc32).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16 + 128);
    loop {
        let consumed = stream.total_in() as usize;
        match stream
            .process_vec(&bytes[consumed..], &mut out, Action::Finish)
            .map_err(std::io::Error::other)?
        {
            Status::StreamEnd => return Ok(out),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}
