//! `mkkexec inspect`: what an initrd or a squashfs image holds, for users
//! debugging an image that does not boot.

use std::fs::File;
use std::io::{BufReader, Read, Write};

use anyhow::{Context, Result, bail};
use backhand::{FilesystemReader, InnerNode};
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

fn squashfs(path: &Utf8Path, out: &mut impl Write) -> Result<()> {
    let f = BufReader::new(File::open(path).with_context(|| format!("cannot open {path}"))?);
    let fs = FilesystemReader::from_reader(f)
        .with_context(|| format!("{path} is not a readable squashfs image"))?;
    let size = std::fs::metadata(path)?.len();
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
