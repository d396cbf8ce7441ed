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

/// lz4's frame format (`lz4` without `-l`), which the kernel does not
/// unpack: `lib/decompress_unlz4.c` reads the legacy format only.
pub const LZ4_FRAME: &str = "lz4 (frame format)";

/// The largest zstd window every kernel accepts: before 5.16,
/// `lib/decompress_unzstd.c` refused a window over `1 << ZSTD_WINDOWLOG_MAX`
/// (27); later kernels allocate the window while unpacking.
const KERNEL_ZSTD_WINDOW: u64 = 128 << 20;

/// Why the kernel's initramfs unpacker would refuse a member that starts
/// with `head` (of the `compression` [`sniff`] found), and what to do; None
/// when it unpacks it, or `head` is too short to tell.
pub fn kernel_refuses(compression: &str, head: &[u8]) -> Option<String> {
    match compression {
        // Stream flags: the check type is the low nibble of byte 7.
        "xz" => {
            let check = match head.get(7)? & 0x0f {
                0 | 1 => return None,
                4 => "CRC64".to_owned(),
                10 => "SHA-256".to_owned(),
                n => format!("check type {n}"),
            };
            Some(format!(
                "xz with a {check} check, which the kernel does not unpack (it takes CRC32 or \
                 none): recompress it with `xz --check=crc32`"
            ))
        }
        "zstd" => {
            let window = zstd_window(head)?;
            (window > KERNEL_ZSTD_WINDOW).then(|| {
                format!(
                    "zstd with a {} MiB window: kernels before 5.16 refuse a window over 128 \
                     MiB, later ones must allocate it while unpacking: recompress it without \
                     `--long` and at level 19 or lower",
                    window >> 20
                )
            })
        }
        LZ4_FRAME => Some(
            "lz4 in the frame format, which the kernel does not unpack (it reads lz4's legacy \
             format only): recompress it with `lz4 -l`"
                .to_owned(),
        ),
        _ => None,
    }
}

/// The window a zstd frame asks the decoder for, from its header
/// (RFC 8878, 3.1.1.1).
fn zstd_window(head: &[u8]) -> Option<u64> {
    let descriptor = *head.get(4)?;
    if descriptor & 0x20 == 0 {
        let w = *head.get(5)?;
        let base = 1u64 << (10 + (w >> 3));
        return Some(base + base / 8 * u64::from(w & 7));
    }
    // Single segment: the window is the frame's content size.
    let dict = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let at = 5 + dict;
    let size = |n: usize| -> Option<u64> {
        let bytes = head.get(at..at + n)?;
        Some(bytes.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b)))
    };
    match descriptor >> 6 {
        0 => size(1),
        1 => size(2).map(|v| v + 256),
        2 => size(4),
        _ => size(8),
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
        [0x04, 0x22, 0x4d, 0x18, ..] => LZ4_FRAME,
        [b'B', b'Z', b'h', ..] => "bzip2",
        [b'0', b'7', b'0', b'7', b'0', b'1' | b'2', ..] => "none (cpio)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_checks() {
        let head = |check: u8| [0xfd, b'7', b'z', b'X', b'Z', 0, 0, check];
        assert_eq!(kernel_refuses("xz", &head(1)), None);
        assert_eq!(kernel_refuses("xz", &head(0)), None);
        let crc64 = kernel_refuses("xz", &head(4)).expect("refused");
        assert!(crc64.starts_with("xz with a CRC64 check"), "{crc64}");
        let sha = kernel_refuses("xz", &head(10)).expect("refused");
        assert!(sha.starts_with("xz with a SHA-256 check"), "{sha}");
    }

    #[test]
    fn zstd_windows() {
        // Window descriptor 0x90: 2^28 bytes (zstd --zstd=wlog=28).
        let big = [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x90];
        assert_eq!(zstd_window(&big), Some(256 << 20));
        assert!(kernel_refuses("zstd", &big).is_some());
        // 2^23 + 3/8 of it.
        assert_eq!(
            zstd_window(&[0, 0, 0, 0, 0x00, 0x6b]),
            Some((8 << 20) * 11 / 8)
        );
        // Single segment, a 2-byte content size: 0x0100 + 256.
        assert_eq!(zstd_window(&[0, 0, 0, 0, 0x60, 0x00, 0x01]), Some(512));
        assert_eq!(
            kernel_refuses("zstd", &[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x68]),
            None
        );
        // Too short to tell.
        assert_eq!(kernel_refuses("zstd", &[0x28, 0xb5, 0x2f, 0xfd]), None);
    }
}
