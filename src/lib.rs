//! mkkexec: turns a NixOS closure into what `kexec` boots — a squashfs of
//! the store, an initrd that carries it, a kexec script and a tarball.
//!
//! Data flows one way, from the command line down to the files:
//!
//! ```text
//! cli ─┬─> boot (tree, scripts, tarball) ─┬─> squashfs (codec, blocks)
//!      │                                  └─> initrd (newc, codec, scan)
//!      ├─> nix (nixbase32, hash, store path, registration, closure)
//!      └─> carry (the old host's network as networkd units)
//! ```
//!
//! `output` (atomic files), `progress` and `level` serve them all. `nix` and
//! `boot` are public for the integration tests; the rest is private.

pub mod boot;
mod carry;
mod cli;
mod initrd;
mod level;
pub mod nix;
mod output;
mod progress;
mod squashfs;

pub use cli::{Cli, report, run};
