//! `mkkexec inspect`: what an initrd or a squashfs image holds, for users
//! debugging an image that does not boot.

use std::fs::File;
use std::io::{BufReader, Read, Write};

use anyhow::{Context, Result, bail};
use backhand::{BackhandError, FilesystemReader, InnerNode};
use camino::Utf8Path;

use crate::initrd;
use crate::progress::mib;

pub fn inspect(path: &Utf8Path, out: &mut impl Write) -> Result<()> {
    // A directory or a device (/dev/zero never ends) is no image.
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {path}"))?;
    if !meta.is_file() {
        bail!("{path} is not a regular file; pass an initrd or a squashfs image");
    }
    let mut magic = [0u8; 4];
    let mut f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("cannot read {path}"))?;
    if &magic[..n] == b"hsqs" {
        squashfs(path, out)
    } else {
        let segments = initrd::scan(path)?;
        if segments.is_empty() {
            bail!(
                "{path} holds no cpio archive ({} bytes, all zeros or empty): not an initrd or a squashfs image",
                meta.len()
            );
        }
        for seg in segments {
            if let Some(why) = &seg.kernel_refuses {
                eprintln!(
                    "mkkexec: warning: {path}: the member at byte {} is {why}",
                    seg.offset
                );
            }
            writeln!(
                out,
                "member at byte {}: {} cpio, {} entries, {} unpacked",
                seg.offset,
                seg.compression,
                seg.entries.len(),
                mib(seg.unpacked_size())
            )?;
            for (name, mode, size) in &seg.entries {
                writeln!(out, "  {mode:06o} {size:>12} {name}")?;
            }
        }
        Ok(())
    }
}

/// The squashfs superblock's length, and where in it `bytes_used`, the
/// image's length, is kept (a little-endian u64).
const SUPERBLOCK: usize = 96;
const BYTES_USED: usize = 40;

/// Why backhand could not read an image, as one sentence: its own errors
/// say a cause twice ("std io error: X: X") or print a parser's debug
/// text (`Incomplete(NeedSize { bits: 32 })`).
fn damage(e: &BackhandError) -> String {
    match e {
        BackhandError::StdIo(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "a table runs past the end of the file".into()
        }
        BackhandError::StdIo(io) => format!("a metadata block does not decompress ({io})"),
        BackhandError::Deku(deku::DekuError::Incomplete(_)) => {
            "a table is shorter than the entries it should hold".into()
        }
        BackhandError::Deku(e) => format!("an entry does not parse ({e})"),
        BackhandError::UnsupportedSquashfsVersion(major, minor) => {
            format!("it says it is squashfs {major}.{minor}, and only 4.0 is read")
        }
        BackhandError::UnsupportedCompression(c) => {
            format!("it names an unknown compression ({c})")
        }
        BackhandError::CorruptedOrInvalidSquashfs => "its tables do not agree".into(),
        other => other.to_string(),
    }
}

fn squashfs(path: &Utf8Path, out: &mut impl Write) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {path}"))?
        .len();
    let mut f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut sb = [0u8; SUPERBLOCK];
    if size < SUPERBLOCK as u64 {
        bail!(
            "{path} is cut short: it has {size} bytes, less than the {SUPERBLOCK}-byte squashfs \
             superblock; copy or build the image again"
        );
    }
    f.read_exact(&mut sb)
        .with_context(|| format!("cannot read {path}"))?;
    let mut used = [0u8; 8];
    used.copy_from_slice(&sb[BYTES_USED..BYTES_USED + 8]);
    let used = u64::from_le_bytes(used);
    if used > size {
        bail!(
            "{path} is cut short: its superblock says the image is {used} bytes, the file has \
             {size} ({} missing); copy or build the image again",
            used - size
        );
    }
    let f = BufReader::new(File::open(path).with_context(|| format!("cannot open {path}"))?);
    let fs = FilesystemReader::from_reader(f).map_err(|e| {
        anyhow::anyhow!(
            "{path} is a damaged squashfs image: {}; build or copy it again",
            damage(&e)
        )
    })?;
    let compressor = match fs.compressor {
        Some(c) => format!("{c:?}"),
        None => "no".into(),
    };
    writeln!(
        out,
        "squashfs: {compressor} compression, {} byte blocks, {} entries, {}",
        fs.block_size,
        fs.files().count(),
        mib(size)
    )?;
    for node in fs.files() {
        let depth = node.fullpath.components().count();
        if depth != 2 {
            continue;
        }
        let kind = match &node.inner {
            InnerNode::Dir(_) => "dir",
            InnerNode::File(_) => "file",
            InnerNode::Symlink(_) => "symlink",
            _ => "other",
        };
        writeln!(out, "  {kind:7} {}", node.fullpath.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_one_sentence() {
        let io = std::io::Error::other("Data corruption detected");
        assert_eq!(
            damage(&BackhandError::StdIo(io)),
            "a metadata block does not decompress (Data corruption detected)"
        );
        let incomplete = deku::DekuError::Incomplete(deku::error::NeedSize::new(32));
        assert_eq!(
            damage(&BackhandError::Deku(incomplete)),
            "a table is shorter than the entries it should hold"
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(
            damage(&BackhandError::StdIo(eof)),
            "a table runs past the end of the file"
        );
    }
}
