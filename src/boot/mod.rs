//! What boots: the kexec tree (kernel, initrd, scripts) and the tarball
//! that carries it to a host without Nix.

pub mod script;
pub mod tarball;
pub mod tree;
