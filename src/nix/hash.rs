//! Content hashes as Nix writes them (`NixHash`, named as in nix-compat).
//!
//! Nix prints a hash as `algo:digest` with the digest in base16, nixbase32
//! or base64, or as SRI (`algo-base64`). The narHash of a registration is
//! `sha256:<nixbase32>`; `nix path-info --json` writes SRI. All forms are
//! accepted; [`NixHash`] displays itself in the registration's form.
//!
//! Formats: <https://nix.dev/manual/nix/latest/language/builtins#builtins-hashString>
//! and <https://www.w3.org/TR/SRI/>.

use std::fmt;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use thiserror::Error;

use super::nixbase32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "md5" => HashAlgo::Md5,
            "sha1" => HashAlgo::Sha1,
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            _ => return None,
        })
    }
}

/// A hash with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixHash {
    pub algo: HashAlgo,
    pub digest: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("{0:?} has no algorithm prefix (expected `sha256:…` or `sha256-…`)")]
    MissingAlgo(String),
    #[error("unknown hash algorithm {0:?} (expected md5, sha1, sha256 or sha512)")]
    UnknownAlgo(String),
    #[error(
        "digest {digest:?} has length {len}, which is neither base16, nixbase32 nor base64 for {algo}"
    )]
    BadLength {
        algo: &'static str,
        digest: String,
        len: usize,
    },
    #[error("{0} is not a NAR hash: Nix hashes NARs with sha256 and its --load-db refuses {1}")]
    NotSha256(String, &'static str),
    #[error("digest {0:?} is not valid {1}")]
    BadDigest(String, &'static str),
}

impl NixHash {
    /// Parse a NAR hash: [`NixHash::parse`], and sha256 (all Nix writes or
    /// loads into its database).
    pub fn parse_nar(s: &str) -> Result<Self, HashError> {
        let h = Self::parse(s)?;
        if h.algo != HashAlgo::Sha256 {
            return Err(HashError::NotSha256(s.to_owned(), h.algo.name()));
        }
        Ok(h)
    }

    /// Parse `algo:digest` (base16, nixbase32 or base64) or SRI `algo-base64`.
    pub fn parse(s: &str) -> Result<Self, HashError> {
        let (algo, digest, sri) = if let Some((a, d)) = s.split_once(':') {
            (a, d, false)
        } else if let Some((a, d)) = s.split_once('-') {
            (a, d, true)
        } else {
            return Err(HashError::MissingAlgo(s.to_owned()));
        };
        let algo =
            HashAlgo::from_name(algo).ok_or_else(|| HashError::UnknownAlgo(algo.to_owned()))?;
        let n = algo.digest_len();
        let bad = |what| HashError::BadDigest(digest.to_owned(), what);
        let bytes = if !sri && digest.len() == 2 * n {
            HEXLOWER_PERMISSIVE
                .decode(digest.as_bytes())
                .map_err(|_| bad("base16"))?
        } else if !sri && digest.len() == nixbase32::encode_len(n) {
            nixbase32::decode(digest).map_err(|_| bad("nixbase32"))?
        } else if digest.len() == BASE64.encode_len(n) {
            BASE64
                .decode(digest.as_bytes())
                .map_err(|_| bad("base64"))?
        } else {
            return Err(HashError::BadLength {
                algo: algo.name(),
                digest: digest.to_owned(),
                len: digest.len(),
            });
        };
        Ok(NixHash {
            algo,
            digest: bytes,
        })
    }

    /// The SRI form, `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo.name(), BASE64.encode(&self.digest))
    }
}

/// `algo:<nixbase32>`: what Nix itself writes into a registration.
impl fmt::Display for NixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.algo.name(),
            nixbase32::encode(&self.digest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIX32: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const HEX: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SRI: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    const B64: &str = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn all_forms_agree() {
        let h = NixHash::parse(NIX32).expect("nix32");
        assert_eq!(NixHash::parse(HEX).expect("hex"), h);
        assert_eq!(NixHash::parse(SRI).expect("sri"), h);
        assert_eq!(NixHash::parse(B64).expect("b64"), h);
        assert_eq!(h.to_string(), NIX32);
        assert_eq!(h.to_sri(), SRI);
    }

    #[test]
    fn missing_algo() {
        assert!(matches!(
            NixHash::parse("abc"),
            Err(HashError::MissingAlgo(_))
        ));
    }

    #[test]
    fn unknown_algo() {
        assert!(matches!(
            NixHash::parse("blake3:00"),
            Err(HashError::UnknownAlgo(_))
        ));
    }

    #[test]
    fn bad_length() {
        assert!(matches!(
            NixHash::parse("sha256:abcd"),
            Err(HashError::BadLength { .. })
        ));
    }

    #[test]
    fn bad_digest() {
        let e = NixHash::parse(&NIX32.replace('0', "e")).expect_err("e is not nixbase32");
        assert!(matches!(e, HashError::BadDigest(_, "nixbase32")));
    }

    #[test]
    fn nar_hash_must_be_sha256() {
        assert_eq!(
            NixHash::parse_nar(SRI).expect("sha256"),
            NixHash::parse(SRI).expect("sri")
        );
        for (h, algo) in [
            ("md5:d41d8cd98f00b204e9800998ecf8427e", "md5"),
            ("sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", "sha1"),
        ] {
            assert_eq!(
                NixHash::parse_nar(h),
                Err(HashError::NotSha256(h.to_owned(), algo))
            );
        }
    }
}
