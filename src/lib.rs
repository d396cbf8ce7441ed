//! mkkexec: turns a NixOS closure into what `kexec` boots — a squashfs of
//! the store, an initrd that carries it, a kexec script and a tarball.

pub mod blocks;
pub mod cli;
pub mod closure;
pub mod compress;
pub mod hash;
pub mod initrd;
pub mod inspect;
pub mod newc;
pub mod nixbase32;
pub mod output;
pub mod progress;
pub mod registration;
pub mod run;
pub mod script;
pub mod squashfs;
pub mod store_path;
pub mod tarball;
pub mod tree;
