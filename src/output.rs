//! Outputs appear whole or not at all: everything is written to a temporary
//! file beside the destination and renamed over it at the end, so a failed
//! or interrupted run never leaves a half-written image behind.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// A temporary name in the directory of `dest` (so that a rename to `dest`
/// is atomic), creating that directory: Nix builders start without $out.
pub fn temp_beside(dest: &Utf8Path) -> Result<Utf8PathBuf> {
    let name = dest
        .file_name()
        .with_context(|| format!("output {dest} has no file name"))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_str().is_empty() => p.to_owned(),
        _ => Utf8PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir} for {dest}"))?;
    Ok(dir.join(format!(".{name}.tmp-{}", std::process::id())))
}

/// A file being written; dropped without [`AtomicFile::commit`] it is removed.
pub struct AtomicFile {
    tmp: Utf8PathBuf,
    dest: Utf8PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(dest: &Utf8Path) -> Result<Self> {
        let tmp = temp_beside(dest)?;
        let file = File::create(&tmp).with_context(|| {
            format!(
                "cannot create {tmp} (the temporary file for {dest}); is its directory writable?"
            )
        })?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_owned(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Flush, sync and rename into place.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().context("output already committed")?;
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.tmp))?;
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("cannot rename {} to {}", self.tmp, self.dest))?;
        Ok(())
    }

    /// Cut the file at `len` bytes (a writer that seeks back may leave
    /// stale bytes past its real end).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        let f = self.file.as_mut().context("output already committed")?;
        f.flush()
            .with_context(|| format!("cannot write {}", self.tmp))?;
        f.get_ref()
            .set_len(len)
            .with_context(|| format!("cannot truncate {}", self.tmp))
    }

    /// Set the permission bits before the commit.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", self.tmp))
    }
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
        }
    }
}
