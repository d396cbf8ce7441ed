//! Stream compression for initrd members, limited to what the Linux kernel's
//! initramfs unpacker (`init/initramfs.c`, `lib/decompress_*.c`) accepts.
//!
//! Kernel rules, measured on Debian's 6.1 kernel (see README):
//! - xz must use the CRC32 (or no) check; the default CRC64 is refused with
//!   "Input was encoded with settings that are not supported by this XZ decoder".
//! - zstd: one frame per member, a window the kernel can allocate.
//! - gzip: any level.
//! - uncompressed cpio must start at a 4-byte-aligned offset of the initrd.
//!
//! Output does not depend on the number of threads: zstd always runs its
//! multithreaded path (≥ 1 worker) and xz always uses a fixed block size.

use std::io::{self, Write};

use clap::ValueEnum;

use crate::level::Leveled;

/// Compression of an initrd member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitrdCompression {
    Zstd,
    Gzip,
    Xz,
    None,
}

impl Leveled for InitrdCompression {
    const WHAT: &'static str = "initrd";

    fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            InitrdCompression::Zstd => 1..=22,
            InitrdCompression::Gzip => 1..=9,
            InitrdCompression::Xz => 0..=9,
            InitrdCompression::None => 0..=0,
        }
    }

    fn default_level(self) -> u32 {
        match self {
            InitrdCompression::Zstd => 19,
            InitrdCompression::Gzip => 9,
            InitrdCompression::Xz => 6,
            InitrdCompression::None => 0,
        }
    }
}

/// How the appended cpio is compressed: checked once.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub compression: InitrdCompression,
    pub level: u32,
}

impl Codec {
    pub fn new(compression: InitrdCompression, level: Option<u32>) -> anyhow::Result<Self> {
        Ok(Codec {
            compression,
            level: compression.level(level)?,
        })
    }
}

/// xz block size: fixed so the output does not depend on the thread count.
const XZ_BLOCK_SIZE: u64 = 16 << 20;

/// A compressing writer; [`Encoder::finish`] must be called to end the stream.
pub enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    pub fn new(w: W, codec: Codec, jobs: u32) -> io::Result<Self> {
        let level = codec.level;
        Ok(match codec.compression {
            InitrdCompression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, level as i32)?;
                // Always the multithreaded path: its output is the same for any
                // worker count >= 1, but differs from the single-threaded one.
                e.multithread(jobs.max(1))?;
                e.include_checksum(true)?;
                // Levels above 19 use windows up to 128 MiB (--ultra); cap the
                // window at 8 MiB, the kernel allocates it while unpacking.
                e.window_log(23)?;
                Encoder::Zstd(e)
            }
            InitrdCompression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level),
            )),
            InitrdCompression::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .preset(level)
                    .threads(jobs.max(1))
                    .block_size(XZ_BLOCK_SIZE)
                    .check(liblzma::stream::Check::Crc32)
                    .encoder()
                    .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(w, stream))
            }
            InitrdCompression::None => Encoder::None(w),
        })
    }

    /// End the stream and give back the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// What a member of a concatenated initrd starts with.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    Some(match head {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x5d, 0, 0, ..] => "lzma",
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4 (legacy)",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [b'0', b'7', b'0', b'7', b'0', b'1' | b'2', ..] => "none (cpio)",
        _ => return None,
    })
}
