//! Outputs appear whole or not at all: everything is written to a temporary
//! file (or directory) beside the destination and renamed over it at the
//! end. A failure anywhere — writing, flushing, syncing, renaming — removes
//! the temporary, and so does SIGINT, SIGTERM or SIGHUP ([`on_signals`]).
//!
//! A temporary file is created 0600, and the rename keeps its mode: every
//! output is given its final mode (0644 unless [`AtomicFile::set_mode`]
//! says otherwise) before the rename, so that another user (an HTTP server
//! serving a tree) can read it. Errors name the output, never the temporary.
//!
//! Temporary names are `.<name>.tmp-<random>`, created exclusively: a run
//! never trips over what a SIGKILLed run left (SIGKILL cannot be caught, so
//! such a leftover stays until removed by hand).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

/// Temporaries under way, removed by the signal handler.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a list that is still right.
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget(path: &Utf8Path) {
    pending().retain(|p| p != path.as_std_path());
}

/// Remove every temporary under way and exit with 128 + the signal's
/// number (130, 143, 129: what a shell reports) when SIGINT, SIGTERM or
/// SIGHUP arrives. Called once by `run`, before any other thread starts.
///
/// The three signals are blocked in this thread, so in every thread started
/// after it (compression workers inherit the mask), and one thread waits for
/// them with `sigwait`: the cleanup runs as ordinary code, not in a signal
/// handler.
pub fn on_signals() -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let set: SigSet = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]
        .into_iter()
        .collect();
    set.thread_block()
        .context("cannot block SIGINT, SIGTERM and SIGHUP")?;
    let waiter = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(signal) = set.wait() else { return };
            for p in pending().drain(..) {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            eprintln!("mkkexec: {signal}: stopped; removed what was being written");
            std::process::exit(128 + signal as i32);
        });
    if let Err(e) = waiter {
        // Without the waiter, blocked signals would never stop the run.
        let _ = set.thread_unblock();
        return Err(e).context("cannot start the thread that handles signals");
    }
    Ok(())
}

/// The directory `dest` goes into (created: Nix builders start without
/// $out) and its file name.
fn split(dest: &Utf8Path) -> Result<(Utf8PathBuf, &str)> {
    let name = dest
        .file_name()
        .with_context(|| format!("output {dest} has no file name"))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_str().is_empty() => p.to_owned(),
        _ => Utf8PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir} for {dest}"))?;
    Ok((dir, name))
}

fn utf8(p: PathBuf) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(p).map_err(|p| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

/// A temporary directory beside `dest`, to be renamed to `dest`; removed
/// when dropped.
pub struct TempDir {
    path: Option<Utf8PathBuf>,
}

impl TempDir {
    pub fn beside(dest: &Utf8Path) -> Result<Self> {
        let (dir, name) = split(dest)?;
        // Held from before the directory exists until it is listed, so that
        // a signal's cleanup (which takes the list) cannot fall in between.
        let mut list = pending();
        let t = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&dir)
            .with_context(|| format!("cannot create a temporary directory in {dir}"))?;
        let path = utf8(t.keep())?;
        list.push(path.clone().into());
        Ok(TempDir { path: Some(path) })
    }

    pub fn path(&self) -> &Utf8Path {
        self.path.as_deref().unwrap_or(Utf8Path::new(""))
    }

    /// Rename into place at `dest`, which must not exist.
    pub fn commit(mut self, dest: &Utf8Path) -> Result<()> {
        let path = self.path.take().context("already committed")?;
        match std::fs::rename(&path, dest) {
            Ok(()) => {
                forget(&path);
                Ok(())
            }
            Err(e) => {
                self.path = Some(path.clone());
                Err(e).with_context(|| format!("cannot rename {path} to {dest}"))
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(&p);
            forget(&p);
        }
    }
}

/// A file being written; dropped without a successful
/// [`AtomicFile::commit`] it is removed.
pub struct AtomicFile {
    tmp: Utf8PathBuf,
    dest: Utf8PathBuf,
    file: Option<BufWriter<File>>,
    /// Given to the file before the rename.
    mode: u32,
}

impl AtomicFile {
    pub fn create(dest: &Utf8Path) -> Result<Self> {
        if dest.is_dir() {
            bail!("output {dest} is a directory; name a file to write instead");
        }
        let (dir, name) = split(dest)?;
        // As in TempDir::beside: no signal between creating and listing.
        let mut list = pending();
        let (file, tmp) = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(&dir)
            .with_context(|| {
                format!("cannot create a temporary file in {dir} for {dest}; is {dir} writable?")
            })?
            .keep()
            .context("cannot keep the temporary file")?;
        let tmp = utf8(tmp)?;
        list.push(tmp.clone().into());
        Ok(AtomicFile {
            tmp,
            dest: dest.to_owned(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            mode: 0o644,
        })
    }

    /// Flush, give the file its mode, sync and rename into place; on any
    /// failure the temporary file is removed (by `Drop`).
    pub fn commit(mut self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dest = &self.dest;
        let file = self.file.as_mut().context("output already committed")?;
        // A full disk shows here; the temporary is an implementation detail.
        file.flush()
            .with_context(|| format!("cannot write {dest}"))?;
        file.get_ref()
            .set_permissions(std::fs::Permissions::from_mode(self.mode))
            .with_context(|| format!("cannot set the mode of {dest}"))?;
        file.get_ref()
            .sync_all()
            .with_context(|| format!("cannot write {dest}"))?;
        std::fs::rename(&self.tmp, dest)
            .with_context(|| format!("cannot rename {} to {dest}", self.tmp))?;
        self.file = None;
        forget(&self.tmp);
        Ok(())
    }

    /// Cut the file at `len` bytes (a writer that seeks back may leave
    /// stale bytes past its real end).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        let dest = &self.dest;
        let f = self.file.as_mut().context("output already committed")?;
        f.flush().with_context(|| format!("cannot write {dest}"))?;
        f.get_ref()
            .set_len(len)
            .with_context(|| format!("cannot truncate {dest}"))
    }

    /// The permission bits the file gets at the commit (0644 by default).
    pub fn set_mode(&mut self, mode: u32) {
        self.mode = mode;
    }
}

/// A reader that remembers whether a read failed: when a copy into an
/// output fails, it tells whether to blame the source or the output (a
/// full disk must not be reported as a source that cannot be read).
pub struct Tracked<R> {
    pub inner: R,
    pub failed: bool,
}

impl<R> Tracked<R> {
    pub fn new(inner: R) -> Self {
        Tracked {
            inner,
            failed: false,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= r.is_err();
        r
    }
}

/// Write `contents` to `path` with `mode`, atomically.
pub fn write_file(path: &Utf8Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(contents)
        .with_context(|| format!("cannot write {path}"))?;
    f.set_mode(mode);
    f.commit()
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("output already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl std::io::Seek for AtomicFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match &mut self.file {
            Some(f) => f.seek(pos),
            None => Err(std::io::Error::other("output already committed")),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            forget(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Utf8Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_directory_as_output_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(t.path()).expect("utf8");
        std::fs::create_dir(dir.join("out")).expect("mkdir");
        let e = AtomicFile::create(&dir.join("out")).err().expect("refused");
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert_eq!(entries(dir), ["out"]);
    }

    #[test]
    fn a_failed_rename_leaves_nothing() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(t.path()).expect("utf8");
        let mut f = AtomicFile::create(&dir.join("out")).expect("create");
        f.write_all(b"data").expect("write");
        // The destination becomes a non-empty directory after the check.
        std::fs::create_dir_all(dir.join("out/x")).expect("mkdir");
        let e = f.commit().expect_err("rename over a directory");
        assert!(format!("{e:#}").contains("cannot rename"), "{e:#}");
        assert_eq!(entries(dir), ["out"]);
        assert!(!pending().iter().any(|p| p.starts_with(dir)));
    }

    #[test]
    fn temporary_names_do_not_collide_with_a_leftover() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(t.path()).expect("utf8");
        // What a SIGKILLed run of the same PID could have left.
        let old = dir.join(format!(".out.tmp-{}", std::process::id()));
        std::fs::write(&old, b"old").expect("write");
        let mut f = AtomicFile::create(&dir.join("out")).expect("create");
        f.write_all(b"new").expect("write");
        f.commit().expect("commit");
        assert_eq!(std::fs::read(dir.join("out")).expect("read"), b"new");
    }
}
