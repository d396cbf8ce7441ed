//! A writer for the "newc" cpio format that the Linux kernel unpacks as an
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry: a 110-byte ASCII header (`070701` then 13 fields of 8 hex
//! digits), the name with its NUL, zero padding to 4 bytes, the data, zero
//! padding to 4 bytes. The archive ends with an entry named `TRAILER!!!`.
//!
//! Written here rather than with the `cpio` crate (which `inspect` and the
//! tests use for reading) because its writer takes `u32` sizes without
//! checking and returns `Ok` on a short write, leaving a corrupt archive.
//! [`NewcWriter::finish`] consumes the writer so the trailer cannot be
//! forgotten.

use std::io::{self, Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
/// Fixed modification time, as Nix gives store paths.
pub const MTIME: u32 = 1;

/// `size` as the header's field: newc's sizes are 32 bits.
fn size32(name: &str, size: u64) -> Result<u32> {
    size.try_into()
        .ok()
        .with_context(|| format!("{name} is {size} bytes; a newc cpio holds files up to 4 GiB"))
}

pub struct NewcWriter<W: Write> {
    w: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(w: W) -> Self {
        NewcWriter {
            w,
            offset: 0,
            next_ino: 1,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.offset % 4) as usize) % 4;
        self.write_raw(&[0u8; 3][..n])
    }

    fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64) -> Result<()> {
        let size = size32(name, size)?;
        if name.is_empty() || name.contains('\0') {
            bail!("invalid cpio entry name {name:?}");
        }
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            MTIME,
            size,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.write_raw(&h)?;
        self.pad()?;
        Ok(())
    }

    /// A directory; `name` has no leading `/` (e.g. `nix/store`).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 2, 0)
    }

    /// A regular file of exactly `size` bytes read from `data`; `data`
    /// holding fewer or more bytes is an error (the file changed while it
    /// was read, or is one whose size is not its content, like `/proc`'s).
    pub fn file(&mut self, name: &str, perm: u32, size: u64, mut data: impl Read) -> Result<()> {
        self.header(name, S_IFREG | (perm & 0o7777), 1, size)?;
        let copied = io::copy(&mut (&mut data).take(size), &mut self.w)?;
        if copied != size {
            bail!("{name} shrank while it was being archived ({copied} of {size} bytes)");
        }
        if data.read(&mut [0u8])? != 0 {
            bail!(
                "{name} has more than the {size} bytes its size says: it grew while it was \
                 being archived, or its size is not its content (a /proc or /sys file); copy it \
                 to a regular file first"
            );
        }
        self.offset += size;
        self.pad()?;
        Ok(())
    }

    /// Write the trailer and give back the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.header(TRAILER, 0, 1, 0)?;
        Ok(self.w)
    }
}

impl<W: Write + Seek> NewcWriter<W> {
    /// A regular file whose data `write` puts in place: it gets the writer
    /// at the data's position (and that position), writes, and returns how
    /// many bytes it wrote. The header's size is filled in after; the
    /// writer is left at the data's end, over anything `write` left past it.
    pub fn file_in_place(
        &mut self,
        name: &str,
        perm: u32,
        write: impl FnOnce(&mut W, u64) -> Result<u64>,
    ) -> Result<()> {
        let header_at = self.w.stream_position()?;
        self.header(name, S_IFREG | (perm & 0o7777), 1, 0)?;
        let data_at = self.w.stream_position()?;
        let size = write(&mut self.w, data_at)?;
        let field = size32(name, size)?;
        // The size is the seventh 8-digit field after the 6-byte magic.
        self.w.seek(SeekFrom::Start(header_at + 6 + 6 * 8))?;
        self.w.write_all(format!("{field:08X}").as_bytes())?;
        self.w.seek(SeekFrom::Start(data_at + size))?;
        self.offset += size;
        self.pad()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut w = NewcWriter::new(Vec::new());
        w.dir("a", 0o755).expect("dir");
        w.file("a/f", 0o644, 5, &b"hello"[..]).expect("file");
        let out = w.finish().expect("finish");
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // Every header starts 4-aligned.
        let text = String::from_utf8_lossy(&out);
        for (i, _) in text.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
        // The standard reader agrees.
        let mut r = &out[..];
        let mut names = vec![];
        loop {
            let e = cpio::NewcReader::new(r).expect("entry");
            if e.entry().is_trailer() {
                break;
            }
            names.push((e.entry().name().to_owned(), e.entry().file_size()));
            r = e.finish().expect("next");
        }
        assert_eq!(names, [("a".into(), 0), ("a/f".into(), 5)]);
    }

    #[test]
    fn a_file_in_place_is_the_file() {
        let mut w = NewcWriter::new(Vec::new());
        w.dir("a", 0o755).expect("dir");
        w.file("a/f", 0o644, 5, &b"hello"[..]).expect("file");
        w.file("b", 0o755, 3, &b"abc"[..]).expect("file");
        let plain = w.finish().expect("finish");

        let mut w = NewcWriter::new(io::Cursor::new(Vec::new()));
        w.dir("a", 0o755).expect("dir");
        w.file_in_place("a/f", 0o644, |c, at| {
            assert_eq!(c.stream_position()?, at);
            // Stale bytes past the end, as backhand may leave them.
            c.write_all(b"helloSTALE")?;
            Ok(5)
        })
        .expect("in place");
        w.file("b", 0o755, 3, &b"abc"[..]).expect("file");
        let in_place = w.finish().expect("finish").into_inner();
        assert_eq!(in_place, plain);
    }

    #[test]
    fn short_file_is_an_error() {
        let mut w = NewcWriter::new(Vec::new());
        let e = w.file("x", 0o644, 10, &b"abc"[..]).expect_err("short");
        assert!(e.to_string().contains("shrank"), "{e}");
    }

    #[test]
    fn long_file_is_an_error() {
        let mut w = NewcWriter::new(Vec::new());
        let e = w.file("x", 0o644, 0, &b"abc"[..]).expect_err("long");
        assert!(e.to_string().contains("more than the 0 bytes"), "{e}");
    }

    #[test]
    fn too_big() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(w.file("x", 0o644, 1 << 32, io::empty()).is_err());
    }
}
