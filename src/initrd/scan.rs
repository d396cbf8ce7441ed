//! Reading initrds back: what each member of a concatenated initrd is and
//! holds (for `inspect` and the memory check of `kexec-boot`), and the check
//! that a file to prepend is an initrd at all.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::codec::{LZ4_FRAME, kernel_refuses, sniff};
use crate::progress::{Counters, Counting};

/// Check that `path` is an initrd the kernel can unpack: a regular file
/// whose first member (after zero padding) is a newc cpio or a compression
/// the kernel knows. Its content is checked later, by the kernel.
pub fn check_prepend(path: &Utf8Path) -> Result<()> {
    let what = "the initrd to prepend (NixOS' stage 1, a microcode cpio, …)";
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open initrd {path} to prepend"))?;
    if !meta.is_file() {
        bail!("{path} is not a regular file; pass {what}");
    }
    let mut head = Vec::with_capacity(8);
    let mut r = BufReader::new(File::open(path).with_context(|| format!("cannot open {path}"))?);
    loop {
        let buf = r
            .fill_buf()
            .with_context(|| format!("cannot read {path}"))?;
        if buf.is_empty() && head.is_empty() {
            bail!("{path} is empty or only zeros; pass {what}");
        }
        if buf.is_empty() {
            break;
        }
        let zeros = if head.is_empty() {
            buf.iter().take_while(|&&b| b == 0).count()
        } else {
            0
        };
        let take = (buf.len() - zeros).min(8 - head.len());
        head.extend_from_slice(&buf[zeros..zeros + take]);
        let n = zeros + take;
        r.consume(n);
        if head.len() == 8 {
            break;
        }
    }
    if let Some(LZ4_FRAME) = sniff(&head) {
        bail!(
            "{path} is lz4 in the frame format, which the kernel does not unpack (it reads \
             lz4's legacy format only): recompress it with `lz4 -l`"
        );
    }
    if sniff(&head).is_none() {
        bail!(
            "{path} is not an initrd: it starts with neither a newc cpio header nor a \
             compression the kernel unpacks (gzip, zstd, xz, lzma, lz4, bzip2); pass {what}"
        );
    }
    Ok(())
}

/// One member of a concatenated initrd.
#[derive(Debug, Default)]
pub struct Segment {
    pub offset: u64,
    pub compression: &'static str,
    /// name, mode, size
    pub entries: Vec<(String, u32, u64)>,
    /// Why the kernel would not unpack this member, and what to do.
    pub kernel_refuses: Option<String>,
}

impl Segment {
    pub fn unpacked_size(&self) -> u64 {
        self.entries.iter().map(|e| e.2).sum()
    }
}

/// A file to copy out of the initrd while it is scanned.
struct Want<'a> {
    name: &'a str,
    out: &'a mut dyn io::Write,
    found: bool,
}

/// Read the cpio entries from `r` up to the trailer, then drain `r`. An
/// error says where in the member reading stopped and why, as the end of
/// a sentence that starts with the member.
fn read_cpio(
    mut r: impl Read,
    seg: &mut Segment,
    drain: bool,
    want: &mut Option<Want>,
) -> Result<()> {
    let fail = |e: io::Error, at: String| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            anyhow!("is cut short: the file ends {at}; copy or build the initrd again")
        } else {
            anyhow!("is damaged {at}: {e}; build the initrd again")
        }
    };
    loop {
        let k = seg.entries.len() + 1;
        let mut e = cpio::NewcReader::new(r)
            .map_err(|e| fail(e, format!("in the newc header of entry {k}")))?;
        if e.entry().is_trailer() {
            r = e
                .finish()
                .map_err(|e| fail(e, "in the cpio trailer".into()))?;
            break;
        }
        let (name, mode, size) = (
            e.entry().name().to_owned(),
            e.entry().mode(),
            u64::from(e.entry().file_size()),
        );
        let at = || format!("in the data of entry {k}, {name} ({size} bytes)");
        // Read here rather than in `finish`, which skips what is missing
        // without a word: a cut would show as a bad header after it.
        let got = match want {
            // (An initrd mkkexec made holds it once.)
            Some(w) if name.trim_start_matches("./").trim_start_matches('/') == w.name => {
                w.found = true;
                io::copy(&mut e, &mut w.out).map_err(|e| fail(e, at()))?
            }
            _ => io::copy(&mut e, &mut io::sink()).map_err(|e| fail(e, at()))?,
        };
        if got < size {
            return Err(fail(io::ErrorKind::UnexpectedEof.into(), at()));
        }
        r = e.finish().map_err(|e| fail(e, at()))?;
        seg.entries.push((name, mode, size));
    }
    if drain {
        io::copy(&mut r, &mut io::sink()).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                anyhow!(
                    "is cut short: the file ends before its compressed stream does; copy or \
                     build the initrd again"
                )
            } else {
                anyhow!(
                    "is damaged: {e} (found at the end of its compressed stream, whose check \
                     covers all of it); build the initrd again"
                )
            }
        })?;
    }
    Ok(())
}

/// Split an initrd into its members and list each one's entries.
pub fn scan(path: &Utf8Path) -> Result<Vec<Segment>> {
    scan_for(path, &mut None)
}

/// Copy the file `name` (a path inside the initrd, without a leading `/`)
/// out of the initrd at `path` into `out`; false where there is none.
pub fn extract(path: &Utf8Path, name: &str, out: &mut dyn io::Write) -> Result<bool> {
    let mut want = Some(Want {
        name,
        out,
        found: false,
    });
    scan_for(path, &mut want)?;
    Ok(want.is_some_and(|w| w.found))
}

fn scan_for(path: &Utf8Path, want: &mut Option<Want>) -> Result<Vec<Segment>> {
    let f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let read = Arc::new(Counters::default());
    let counting = Counting {
        inner: f,
        counters: Arc::clone(&read),
    };
    let mut r = BufReader::with_capacity(1 << 16, counting);
    let mut segments = vec![];
    loop {
        // Skip the zero padding between members.
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(segments);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            let done = zeros < buf.len();
            r.consume(zeros);
            if done {
                break;
            }
        }
        let offset = read.bytes.load(Ordering::Relaxed) - r.buffer().len() as u64;
        let head = r
            .fill_buf()
            .with_context(|| format!("cannot read {path}"))?;
        let compression = sniff(head).with_context(|| {
            format!(
                "{path}: unknown data at byte {offset}: not a cpio or a compression the kernel \
                 knows; the initrd is damaged, or not an initrd from there on"
            )
        })?;
        let mut seg = Segment {
            offset,
            compression,
            entries: vec![],
            kernel_refuses: kernel_refuses(compression, head),
        };
        if compression == LZ4_FRAME {
            bail!(
                "{path}: the member at byte {offset} is {}",
                seg.kernel_refuses.unwrap_or_default()
            );
        }
        let read = match compression {
            "gzip" => read_cpio(
                flate2::bufread::GzDecoder::new(&mut r),
                &mut seg,
                true,
                want,
            ),
            "zstd" => {
                let mut d = zstd::stream::read::Decoder::with_buffer(&mut r)
                    .with_context(|| format!("cannot start a zstd decoder for {path}"))?
                    .single_frame();
                // Read any window zstd allows (its default stops at 128 MiB),
                // so that a window the kernel may refuse is warned of, not
                // an error here.
                d.window_log_max(31)
                    .with_context(|| format!("cannot start a zstd decoder for {path}"))?;
                read_cpio(d, &mut seg, true, want)
            }
            "xz" => read_cpio(
                liblzma::bufread::XzDecoder::new(&mut r),
                &mut seg,
                true,
                want,
            ),
            "none (cpio)" => read_cpio(&mut r, &mut seg, false, want),
            other => bail!(
                "{path}: the member at byte {offset} is {other}, which mkkexec cannot read (the \
                 kernel may)"
            ),
        };
        read.map_err(|e| anyhow!("{path}: the member at byte {offset} ({compression}) {e}"))?;
        segments.push(seg);
    }
}

/// The bytes the kernel will unpack from the initrds in `paths`.
/// An initrd mkkexec cannot read (lz4, bzip2, lzma members) counts as four
/// times its size: the figure only feeds kexec-boot's memory check.
pub fn unpacked_size(paths: &[Utf8PathBuf]) -> Result<u64> {
    let mut total = 0;
    for p in paths {
        total += match scan(p) {
            Ok(segments) => {
                for s in &segments {
                    if let Some(why) = &s.kernel_refuses {
                        eprintln!(
                            "mkkexec: warning: {p}: the member at byte {} is {why}",
                            s.offset
                        );
                    }
                }
                segments.iter().map(Segment::unpacked_size).sum::<u64>()
            }
            Err(e) => {
                let size = std::fs::metadata(p)
                    .with_context(|| format!("cannot read {p}"))?
                    .len();
                eprintln!(
                    "mkkexec: warning: {e:#}; estimating its unpacked size as 4 × {size} bytes"
                );
                4 * size
            }
        };
    }
    Ok(total)
}
