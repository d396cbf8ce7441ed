//! The NAR (Nix ARchive) serialisation of a store path, hashed as Nix hashes
//! it for a path's `narHash` and `narSize`. Modelled on nix-compat's `nar`
//! writer (snix); only what hashing needs is here, no reader.
//!
//! Every token is a *string*: its length as a little-endian u64, its bytes,
//! zeros up to a multiple of 8. A NAR is `nix-archive-1` then one node:
//!
//! ```text
//! ( type regular [executable ""] contents <bytes> )
//! ( type symlink target <target> )
//! ( type directory { entry ( name <name> node <node> ) }* )
//! ```
//!
//! Directory entries come in byte order of their names. A file is
//! executable when its owner may execute it; other mode bits, owners and
//! times are not in a NAR. Spec: Eelco Dolstra's thesis, figure 5.2, and
//! <https://nix.dev/manual/nix/latest/protocols/nix-archive>.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::hash::{HashAlgo, NixHash};

/// Append `s` as a NAR string.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + padding(s.len() as u64), 0);
}

/// Zeros after `len` bytes of a string's contents.
pub fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// What comes before a node: the archive's magic at the top, nothing
/// inside a directory (the entry's tokens are written by [`entry_start`]).
pub fn archive_start(out: &mut Vec<u8>) {
    put_str(out, b"nix-archive-1");
}

/// The tokens of a regular file up to its contents (its length included).
pub fn file_start(out: &mut Vec<u8>, executable: bool, len: u64) {
    for s in [&b"("[..], b"type", b"regular"] {
        put_str(out, s);
    }
    if executable {
        put_str(out, b"executable");
        put_str(out, b"");
    }
    put_str(out, b"contents");
    out.extend_from_slice(&len.to_le_bytes());
}

/// The tokens after a file's `len` bytes of contents.
pub fn file_end(out: &mut Vec<u8>, len: u64) {
    out.resize(out.len() + padding(len), 0);
    put_str(out, b")");
}

pub fn symlink(out: &mut Vec<u8>, target: &[u8]) {
    for s in [&b"("[..], b"type", b"symlink", b"target", target, b")"] {
        put_str(out, s);
    }
}

pub fn dir_start(out: &mut Vec<u8>) {
    for s in [&b"("[..], b"type", b"directory"] {
        put_str(out, s);
    }
}

pub fn entry_start(out: &mut Vec<u8>, name: &[u8]) {
    for s in [&b"entry"[..], b"(", b"name", name, b"node"] {
        put_str(out, s);
    }
}

/// Closes an entry, or a directory.
pub fn close(out: &mut Vec<u8>) {
    put_str(out, b")");
}

/// Whether Nix stores a file with this mode as executable.
pub fn is_executable(mode: u32) -> bool {
    mode & 0o100 != 0
}

/// A running NAR hash: sha256 and length of what was fed.
#[derive(Clone, Default)]
pub struct NarHasher {
    sha: Sha256,
    size: u64,
}

impl NarHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// The hash as a registration writes it, and the NAR's size.
    pub fn finish(self) -> (NixHash, u64) {
        (
            NixHash {
                algo: HashAlgo::Sha256,
                digest: self.sha.finalize().to_vec(),
            },
            self.size,
        )
    }
}

/// One store path's NAR, hashed while something else reads its files: the
/// tokens are known from the walk ([`NarStream::tokens`], [`NarStream::file`]),
/// the contents arrive later through [`NarStream::data`], in the NAR's
/// order. A file read out of that order marks the stream broken, and its
/// owner hashes the path from disk instead ([`hash_path`]): never a wrong
/// hash, at worst a second read.
#[derive(Default)]
pub struct NarStream {
    segments: Vec<Segment>,
    /// Tokens after the last segment.
    pending: Vec<u8>,
    /// The first segment not yet fed.
    next: usize,
    hasher: NarHasher,
    broken: bool,
}

enum Segment {
    Tokens(Vec<u8>),
    File(u64),
}

impl NarStream {
    /// Where the walk appends tokens.
    pub fn tokens(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    fn seal(&mut self) {
        if !self.pending.is_empty() {
            let mut t = std::mem::take(&mut self.pending);
            // Held until the files are read: no spare capacity.
            t.shrink_to_fit();
            self.segments.push(Segment::Tokens(t));
        }
    }

    /// A file's contents of `len` bytes come next; returns its number for
    /// [`NarStream::begin`].
    pub fn file(&mut self, len: u64) -> usize {
        self.seal();
        self.segments.push(Segment::File(len));
        self.segments.len() - 1
    }

    /// Feed segments up to file `id`, whose contents come next. Files
    /// skipped must be empty (a reader may never read an empty file).
    pub fn begin(&mut self, id: usize) {
        if self.broken {
            return;
        }
        if id < self.next || !self.feed_until(id) {
            self.broken = true;
            return;
        }
        self.next = id + 1;
    }

    pub fn data(&mut self, bytes: &[u8]) {
        if !self.broken {
            self.hasher.update(bytes);
        }
    }

    /// Feed segments before `end`; false where a non-empty file would be
    /// skipped.
    fn feed_until(&mut self, end: usize) -> bool {
        while self.next < end.min(self.segments.len()) {
            match &mut self.segments[self.next] {
                Segment::Tokens(t) => {
                    self.hasher.update(t);
                    // Fed once: free it.
                    *t = Vec::new();
                }
                Segment::File(0) => {}
                Segment::File(_) => return false,
            }
            self.next += 1;
        }
        true
    }

    /// The hash and size, or None where the files came out of order.
    pub fn finish(mut self) -> Option<(NixHash, u64)> {
        self.seal();
        if self.broken || !self.feed_until(self.segments.len()) {
            return None;
        }
        Some(self.hasher.finish())
    }
}

/// The NAR hash and size of the file, directory or symlink at `path`, read
/// from disk. Errors name the file.
pub fn hash_path(path: &Path) -> io::Result<(NixHash, u64)> {
    let mut h = NarHasher::default();
    let mut buf = Vec::new();
    archive_start(&mut buf);
    dump(path, &mut h, &mut buf)?;
    h.update(&buf);
    Ok(h.finish())
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// What is left to serialise: a node, or tokens after one.
enum Work {
    Node(PathBuf),
    Tokens(Vec<u8>),
}

/// Serialise `path` into `h`; `buf` holds tokens not yet fed. A loop over
/// a stack, not recursion: a store may nest deeper than a thread's stack.
fn dump(path: &Path, h: &mut NarHasher, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut work = vec![Work::Node(path.to_owned())];
    while let Some(item) = work.pop() {
        let path = match item {
            Work::Tokens(t) => {
                buf.extend_from_slice(&t);
                continue;
            }
            Work::Node(p) => p,
        };
        let path = path.as_path();
        let meta = std::fs::symlink_metadata(path).map_err(|e| named(path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| named(path, e))?;
            symlink(buf, target.as_os_str().as_bytes());
        } else if ft.is_file() {
            let len = meta.len();
            file_start(buf, is_executable(meta.permissions().mode()), len);
            h.update(buf);
            buf.clear();
            let read = feed_file(path, h)?;
            if read != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} changed while it was read ({len} bytes, then {read})",
                        path.display()
                    ),
                ));
            }
            file_end(buf, len);
        } else if ft.is_dir() {
            dir_start(buf);
            let mut names = std::fs::read_dir(path)
                .map_err(|e| named(path, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
                .map_err(|e| named(path, e))?;
            names.sort();
            let mut end = Vec::new();
            close(&mut end);
            work.push(Work::Tokens(end.clone()));
            for name in names.into_iter().rev() {
                work.push(Work::Tokens(end.clone()));
                work.push(Work::Node(path.join(&name)));
                let mut start = Vec::new();
                entry_start(&mut start, name.as_bytes());
                work.push(Work::Tokens(start));
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is neither a file, a directory nor a symlink",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Feed a file's contents; returns how many bytes it had.
fn feed_file(path: &Path, h: &mut NarHasher) -> io::Result<u64> {
    let mut f = File::open(path).map_err(|e| named(path, e))?;
    let mut chunk = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut chunk).map_err(|e| named(path, e))?;
        if n == 0 {
            return Ok(read);
        }
        read += n as u64;
        h.update(chunk.get(..n).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(tokens: &[u8]) -> String {
        let mut h = NarHasher::default();
        h.update(tokens);
        h.finish().0.to_string()
    }

    #[test]
    fn strings_are_padded_to_eight_bytes() {
        let mut v = Vec::new();
        put_str(&mut v, b"abc");
        assert_eq!(v, b"\x03\0\0\0\0\0\0\0abc\0\0\0\0\0");
        v.clear();
        put_str(&mut v, b"12345678");
        assert_eq!(v.len(), 16);
        v.clear();
        put_str(&mut v, b"");
        assert_eq!(v, [0u8; 8]);
    }

    /// Hashes `nix-store --dump | nix-hash --flat --type sha256 --base32`
    /// printed for these paths (Nix 2.8).
    #[test]
    fn known_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"hello\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        let (hash, size) = hash_path(&f).expect("hash");
        assert_eq!(size, 120);
        assert_eq!(
            hash.to_string(),
            "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
        );
        let mut tokens = Vec::new();
        archive_start(&mut tokens);
        file_start(&mut tokens, false, 6);
        tokens.extend_from_slice(b"hello\n");
        file_end(&mut tokens, 6);
        assert_eq!(hash_of(&tokens), hash.to_string());

        // A directory with an executable, a symlink, an empty file in a
        // subdirectory, entries created out of order.
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("c")).expect("mkdir");
        std::fs::write(d.join("c/e"), b"").expect("write");
        std::os::unix::fs::symlink("../f", d.join("a")).expect("symlink");
        std::fs::write(d.join("b"), b"x").expect("write");
        std::fs::set_permissions(d.join("b"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let (hash, size) = hash_path(&d).expect("hash");
        assert_eq!(
            (hash.to_string().as_str(), size),
            (
                "sha256:1vdrssrqnqka3a9p54akcyhrnxrmapbv5fhi8jp2mmmdql4fwy4f",
                864
            )
        );

        let l = dir.path().join("l");
        std::os::unix::fs::symlink("/some/target", &l).expect("symlink");
        assert_eq!(
            hash_path(&l).expect("hash").0.to_string(),
            "sha256:0y01s91y7qnyb1rkg1wrmp07gnzpgh8fz0fm4d6y4a533iizw4xa"
        );
    }

    /// A stream fed in order gives the hash of the whole; a file skipped
    /// or read twice breaks it (its owner then reads the disk).
    #[test]
    fn stream_in_and_out_of_order() {
        let build = || {
            let mut s = NarStream::default();
            archive_start(s.tokens());
            dir_start(s.tokens());
            let mut ids = Vec::new();
            for (name, data) in [("a", &b"first"[..]), ("b", b""), ("c", b"third!!!!")] {
                entry_start(s.tokens(), name.as_bytes());
                file_start(s.tokens(), false, data.len() as u64);
                ids.push((s.file(data.len() as u64), data));
                file_end(s.tokens(), data.len() as u64);
                close(s.tokens());
            }
            close(s.tokens());
            (s, ids)
        };
        let mut whole = Vec::new();
        archive_start(&mut whole);
        dir_start(&mut whole);
        for (name, data) in [("a", &b"first"[..]), ("b", b""), ("c", b"third!!!!")] {
            entry_start(&mut whole, name.as_bytes());
            file_start(&mut whole, false, data.len() as u64);
            whole.extend_from_slice(data);
            file_end(&mut whole, data.len() as u64);
            close(&mut whole);
        }
        close(&mut whole);

        // In order, the empty file never read.
        let (mut s, ids) = build();
        for (id, data) in [ids[0], ids[2]] {
            s.begin(id);
            s.data(data);
        }
        let (hash, size) = s.finish().expect("in order");
        assert_eq!(hash.to_string(), hash_of(&whole));
        assert_eq!(size, whole.len() as u64);

        // Out of order.
        let (mut s, ids) = build();
        for (id, data) in [ids[2], ids[0]] {
            s.begin(id);
            s.data(data);
        }
        assert!(s.finish().is_none());

        // A non-empty file never read.
        let (mut s, ids) = build();
        s.begin(ids[0].0);
        s.data(ids[0].1);
        assert!(s.finish().is_none());
    }
}
