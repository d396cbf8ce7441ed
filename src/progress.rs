//! Progress on stderr for long work: a line a second with files and bytes
//! done, silent with `-q`, and silent when stderr is not a terminal unless
//! the work is long (Nix build logs get a line every 10 s).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    done: AtomicBool,
}

impl Counters {
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
}

/// A reader that adds the bytes it reads to [`Counters`] (progress, and
/// offsets in what was read).
pub struct Counting<R> {
    pub inner: R,
    pub counters: Arc<Counters>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.add_bytes(n as u64);
        Ok(n)
    }
}

/// Reports [`Counters`] until dropped.
pub struct Progress {
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Progress {
    /// `what` names the work; `total_files` and `total_bytes` are the goal.
    pub fn start(
        what: &'static str,
        quiet: bool,
        counters: Arc<Counters>,
        total_files: u64,
        total_bytes: u64,
    ) -> Self {
        let thread = (!quiet).then(|| {
            let c = Arc::clone(&counters);
            let every = if std::io::stderr().is_terminal() {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(10)
            };
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut next = start + every;
                while !c.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() < next {
                        continue;
                    }
                    next += every;
                    let bytes = c.bytes.load(Ordering::Relaxed);
                    eprintln!(
                        "{what}: {}/{total_files} files, {} of {} ({:.0}%), {:.0} s",
                        c.files.load(Ordering::Relaxed),
                        mib(bytes),
                        mib(total_bytes),
                        100.0 * bytes as f64 / total_bytes.max(1) as f64,
                        start.elapsed().as_secs_f64()
                    );
                }
            })
        });
        Progress { counters, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.counters.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
