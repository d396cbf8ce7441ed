//! The Nix formats mkkexec reads and writes, one small module each, shaped
//! like nix-compat's: nixbase32, hashes, store paths, the registration
//! (`nix-store --load-db`) and the closure built from either it or the
//! structured-attrs JSON of `exportReferencesGraph`, and the NAR
//! serialisation a path's `narHash` is computed over.

pub mod closure;
pub mod hash;
pub mod nar;
pub mod nixbase32;
pub mod registration;
pub mod store_path;
