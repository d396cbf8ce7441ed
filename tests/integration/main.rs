//! Integration tests: one binary (see STYLE.md). Each module builds its
//! artifacts in a tempdir with the real `mkkexec` binary and checks them with
//! an independent reader: squashfs-tools, cpio, zstd/xz/gzip, shellcheck,
//! dash, Nix, nixpkgs' module system, and the Linux kernel under QEMU.

mod aarch64;
mod anywhere;
mod boot;
mod common;
mod initrd;
mod inspect;
mod journey;
mod module;
mod netboot;
mod network;
mod nix;
mod nixfmt;
mod script;
mod squashfs;
mod tree;
mod verify;
