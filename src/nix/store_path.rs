//! Nix store paths, `/nix/store/<hash>-<name>` (named as in nix-compat).
//!
//! The hash part is 20 bytes in nixbase32 (32 characters); the name is at
//! most 211 characters of `[A-Za-z0-9+\-._?=]` and is neither `.` nor `..`.
//! Spec: <https://nix.dev/manual/nix/latest/protocols/store-path>

use std::fmt;

use thiserror::Error;

use super::nixbase32;

/// The only store directory a NixOS kexec image can boot from: stage 1
/// mounts the squashfs at `/nix/.ro-store` and the overlay at `/nix/store`.
pub const STORE_DIR: &str = "/nix/store";
const DIGEST_SIZE: usize = 20;
const ENCODED_DIGEST_SIZE: usize = nixbase32::encode_len(DIGEST_SIZE);
const MAX_NAME_LEN: usize = 211;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("{0:?} is not under {STORE_DIR}/ (only the default store directory can be booted)")]
    NotInStore(String),
    #[error("{0:?} is too short for a store path (<32-char hash>-<name>)")]
    TooShort(String),
    #[error("{0:?} has an invalid hash part: {1}")]
    InvalidHash(String, nixbase32::Nixbase32DecodeError),
    #[error("{0:?} has no `-` between the hash and the name")]
    MissingDash(String),
    #[error("{0:?} has an invalid name: {1}")]
    InvalidName(String, &'static str),
}

/// A validated store path; holds its base name (`<hash>-<name>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    base: String,
}

impl StorePath {
    /// Parse an absolute path such as `/nix/store/…-hello-2.12`.
    pub fn from_absolute_path(s: &str) -> Result<Self, StorePathError> {
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(s.to_owned()))?;
        Self::from_base_name(base).map_err(|e| match e {
            // Report the whole path the user wrote, not just its tail.
            StorePathError::TooShort(_) => StorePathError::TooShort(s.to_owned()),
            StorePathError::InvalidHash(_, h) => StorePathError::InvalidHash(s.to_owned(), h),
            StorePathError::MissingDash(_) => StorePathError::MissingDash(s.to_owned()),
            StorePathError::InvalidName(_, why) => StorePathError::InvalidName(s.to_owned(), why),
            other => other,
        })
    }

    /// Parse a base name `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        if base.len() < ENCODED_DIGEST_SIZE + 2 || !base.is_char_boundary(ENCODED_DIGEST_SIZE) {
            return Err(StorePathError::TooShort(base.to_owned()));
        }
        let (hash, rest) = base.split_at(ENCODED_DIGEST_SIZE);
        nixbase32::decode_fixed::<DIGEST_SIZE>(hash)
            .map_err(|e| StorePathError::InvalidHash(base.to_owned(), e))?;
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::MissingDash(base.to_owned()))?;
        validate_name(name).map_err(|why| StorePathError::InvalidName(base.to_owned(), why))?;
        Ok(StorePath {
            base: base.to_owned(),
        })
    }

    /// `<hash>-<name>`: the entry name at the squashfs root.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    pub fn name(&self) -> &str {
        &self.base[ENCODED_DIGEST_SIZE + 1..]
    }

    pub fn to_absolute_path(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 211 characters");
    }
    if name == "." || name == ".." {
        return Err("it is `.` or `..`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
    {
        return Err("only A-Z a-z 0-9 and + - . _ ? = are allowed");
    }
    Ok(())
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60_p20170221182432";

    #[test]
    fn parses_and_displays() {
        let p = StorePath::from_absolute_path(GOOD).expect("valid");
        assert_eq!(p.to_string(), GOOD);
        assert_eq!(p.name(), "net-tools-1.60_p20170221182432");
        assert_eq!(p.base_name(), &GOOD[11..]);
    }

    #[test]
    fn not_in_store() {
        let e = StorePath::from_absolute_path("/gnu/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x");
        assert!(matches!(e, Err(StorePathError::NotInStore(_))));
    }

    #[test]
    fn too_short() {
        assert!(matches!(
            StorePath::from_absolute_path("/nix/store/abc"),
            Err(StorePathError::TooShort(_))
        ));
    }

    #[test]
    fn invalid_hash() {
        let e = StorePath::from_absolute_path("/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44le-x");
        assert!(matches!(e, Err(StorePathError::InvalidHash(..))));
    }

    #[test]
    fn missing_dash() {
        let e = StorePath::from_absolute_path("/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la_x");
        assert!(matches!(e, Err(StorePathError::MissingDash(_))));
    }

    #[test]
    fn invalid_name() {
        for bad in ["a b", "..", "x/y", "é"] {
            let e = StorePath::from_absolute_path(&format!("{}-{bad}", &GOOD[..43]));
            assert!(
                matches!(e, Err(StorePathError::InvalidName(..))),
                "{bad}: {e:?}"
            );
        }
        let long = "a".repeat(212);
        let e = StorePath::from_absolute_path(&format!("{}-{long}", &GOOD[..43]));
        assert!(matches!(e, Err(StorePathError::InvalidName(..))));
    }
}
