//! The registration format of `nix-store --load-db` (`nix-path-registration`,
//! closureInfo's `registration`).
//!
//! For each store path, one item per line:
//!
//! ```text
//! /nix/store/<hash>-<name>      the path
//! sha256:<nixbase32>            its NAR hash (any form Nix parses)
//! 1234                          its NAR size in bytes
//!                               its deriver, or an empty line
//! 2                             the number of references
//! /nix/store/<hash>-<dep>       one line per reference
//! /nix/store/<hash>-<name>
//! ```
//!
//! The file ends with or without a final newline. See Nix's
//! `decodeValidPathInfo` (src/libstore/path-info.cc) and nixpkgs'
//! `closure-info.nix`, which writes it.

use std::fmt;

use thiserror::Error;

use super::hash::{HashError, NixHash};
use super::store_path::{StorePath, StorePathError};

/// What Nix knows about one valid store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: NixHash,
    pub nar_size: u64,
    pub deriver: Option<StorePath>,
    pub references: Vec<StorePath>,
}

/// A parse error; `line` is 1-based.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error(
        "line {line}: the file ends in the middle of this line: it was cut short (Nix ends \
         every line with a newline); write it again"
    )]
    Cut { line: usize },
    #[error("line {line}: the file ends where {expected} of {path} was expected")]
    UnexpectedEnd {
        line: usize,
        expected: &'static str,
        path: String,
    },
    // The causes are printed in the message and so are not `source`s: an
    // error chain would print them twice.
    #[error("line {line}: {cause}")]
    InvalidPath { line: usize, cause: StorePathError },
    #[error("line {line}: bad NAR hash: {cause}")]
    InvalidHash { line: usize, cause: HashError },
    #[error(
        "line {line} is empty where {expected} was expected; the only empty line a \
         registration holds is a missing deriver's: remove it, or write the closure again"
    )]
    Blank { line: usize, expected: String },
    #[error("line {line}: NAR size {text:?} is not a whole number of bytes")]
    InvalidSize { line: usize, text: String },
    #[error(
        "line {line}: NAR size {text} is too large: no NAR is larger than {} bytes \
         (2^64 - 1); is the file damaged?",
        u64::MAX
    )]
    SizeTooLarge { line: usize, text: String },
    #[error("line {line}: bad deriver: {cause}")]
    InvalidDeriver { line: usize, cause: StorePathError },
    #[error("line {line}: reference count {text:?} is not a whole number")]
    InvalidCount { line: usize, text: String },
    #[error("line {line}: reference count {text} is too large; is the file damaged?")]
    CountTooLarge { line: usize, text: String },
    #[error("line {line}: bad reference: {cause}")]
    InvalidReference { line: usize, cause: StorePathError },
}

struct Lines<'a> {
    iter: std::iter::Enumerate<std::str::Split<'a, char>>,
    last: usize,
}

impl<'a> Lines<'a> {
    /// The next line and its 1-based number, unless the file has ended.
    fn try_next(&mut self) -> Option<(usize, &'a str)> {
        self.iter
            .next()
            .filter(|(i, _)| *i < self.last)
            .map(|(i, l)| (i + 1, l))
    }

    fn next(
        &mut self,
        expected: &'static str,
        path: &str,
    ) -> Result<(usize, &'a str), RegistrationError> {
        self.try_next()
            .ok_or_else(|| RegistrationError::UnexpectedEnd {
                line: self.last + 1,
                expected,
                path: path.to_owned(),
            })
    }
}

/// `text` unless it is empty (where a path, a hash or a number must be).
fn filled(
    (line, text): (usize, &str),
    expected: impl FnOnce() -> String,
) -> Result<(usize, &str), RegistrationError> {
    if text.is_empty() {
        return Err(RegistrationError::Blank {
            line,
            expected: expected(),
        });
    }
    Ok((line, text))
}

/// A number, or why it is not one.
fn number<T: std::str::FromStr<Err = std::num::ParseIntError>>(
    line: usize,
    text: &str,
    invalid: fn(usize, String) -> RegistrationError,
    too_large: fn(usize, String) -> RegistrationError,
) -> Result<T, RegistrationError> {
    text.parse().map_err(|e: std::num::ParseIntError| {
        // Digits only: "+1" would parse, and "-1" would be an underflow.
        if *e.kind() == std::num::IntErrorKind::PosOverflow
            && text.bytes().all(|b| b.is_ascii_digit())
        {
            too_large(line, text.to_owned())
        } else {
            invalid(line, text.to_owned())
        }
    })
}

/// Parse a whole registration.
pub fn parse(text: &str) -> Result<Vec<PathInfo>, RegistrationError> {
    // A final newline ends the last line; it does not start an empty one.
    // Without one, the last line may be a store path cut in two, which
    // would be read as a valid but different path.
    let body = match text.strip_suffix('\n') {
        Some(body) => body,
        None if text.is_empty() => text,
        None => {
            return Err(RegistrationError::Cut {
                line: text.split('\n').count(),
            });
        }
    };
    let last = if body.is_empty() {
        0
    } else {
        body.split('\n').count()
    };
    let mut lines = Lines {
        iter: body.split('\n').enumerate(),
        last,
    };
    let mut infos = Vec::new();
    while let Some(next) = lines.try_next() {
        let (line, path) = filled(next, || "a store path".to_owned())?;
        let path = StorePath::from_absolute_path(path)
            .map_err(|cause| RegistrationError::InvalidPath { line, cause })?;
        let p = path.to_absolute_path();

        let (line, hash) = filled(lines.next("the NAR hash", &p)?, || {
            format!("the NAR hash of {p}")
        })?;
        let nar_hash = NixHash::parse_nar(hash)
            .map_err(|cause| RegistrationError::InvalidHash { line, cause })?;

        let (line, size) = filled(lines.next("the NAR size", &p)?, || {
            format!("the NAR size of {p}")
        })?;
        let nar_size = number(
            line,
            size,
            |line, text| RegistrationError::InvalidSize { line, text },
            |line, text| RegistrationError::SizeTooLarge { line, text },
        )?;

        let (line, deriver) = lines.next("the deriver line", &p)?;
        let deriver = match deriver {
            "" => None,
            d => Some(
                StorePath::from_absolute_path(d)
                    .map_err(|cause| RegistrationError::InvalidDeriver { line, cause })?,
            ),
        };

        let (line, count) = filled(lines.next("the reference count", &p)?, || {
            format!("the reference count of {p}")
        })?;
        let count: usize = number(
            line,
            count,
            |line, text| RegistrationError::InvalidCount { line, text },
            |line, text| RegistrationError::CountTooLarge { line, text },
        )?;

        let mut references = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let (line, r) = filled(lines.next("a reference", &p)?, || {
                format!("a reference of {p}")
            })?;
            references.push(
                StorePath::from_absolute_path(r)
                    .map_err(|cause| RegistrationError::InvalidReference { line, cause })?,
            );
        }
        infos.push(PathInfo {
            path,
            nar_hash,
            nar_size,
            deriver,
            references,
        });
    }
    Ok(infos)
}

/// Writes a registration that [`parse`] and `nix-store --load-db` read.
pub struct Registration<'a>(pub &'a [PathInfo]);

impl fmt::Display for Registration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for info in self.0 {
            writeln!(f, "{}", info.path)?;
            writeln!(f, "{}", info.nar_hash)?;
            writeln!(f, "{}", info.nar_size)?;
            match &info.deriver {
                Some(d) => writeln!(f, "{d}")?,
                None => writeln!(f)?,
            }
            writeln!(f, "{}", info.references.len())?;
            for r in &info.references {
                writeln!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-a";
    const B: &str = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-b";
    const H: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

    fn sample() -> String {
        format!("{A}\n{H}\n120\n\n2\n{A}\n{B}\n{B}\n{H}\n56\n{A}\n0\n")
    }

    #[test]
    fn parse_display_round_trip() {
        let infos = parse(&sample()).expect("valid");
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].references.len(), 2);
        assert_eq!(
            infos[1].deriver.as_ref().map(|d| d.to_string()),
            Some(A.to_owned())
        );
        let text = Registration(&infos).to_string();
        assert_eq!(text, sample());
        assert_eq!(parse(&text).expect("reparse"), infos);
    }

    #[test]
    fn cut_in_a_line() {
        let s = sample();
        // Cut inside the last deriver.
        let cut = &s[..s.len() - 4];
        assert_eq!(err(cut.to_owned()), RegistrationError::Cut { line: 11 });
        assert_eq!(
            err(s.trim_end().to_owned()),
            RegistrationError::Cut { line: 12 }
        );
    }

    #[test]
    fn empty() {
        assert_eq!(parse("").expect("valid"), vec![]);
        assert_eq!(parse("\n").expect("valid"), vec![]);
    }

    #[test]
    fn hash_forms() {
        let sri = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let infos = parse(&format!("{A}\n{sri}\n1\n\n0\n")).expect("SRI accepted");
        assert_eq!(infos[0].nar_hash.to_string(), H);
    }

    fn err(text: String) -> RegistrationError {
        parse(&text).expect_err("must fail")
    }

    #[test]
    fn unexpected_end() {
        let e = err(format!("{A}\n{H}\n120\n\n2\n{A}\n"));
        assert_eq!(
            e,
            RegistrationError::UnexpectedEnd {
                line: 7,
                expected: "a reference",
                path: A.into()
            }
        );
        assert_eq!(
            e.to_string(),
            format!("line 7: the file ends where a reference of {A} was expected")
        );
    }

    #[test]
    fn invalid_path() {
        assert!(matches!(
            err(format!("/tmp/x\n{H}\n")),
            RegistrationError::InvalidPath { line: 1, .. }
        ));
    }

    #[test]
    fn invalid_hash() {
        assert!(matches!(
            err(format!("{A}\nsha256:xyz\n1\n\n0\n")),
            RegistrationError::InvalidHash { line: 2, .. }
        ));
    }

    #[test]
    fn invalid_size() {
        assert!(matches!(
            err(format!("{A}\n{H}\n-1\n\n0\n")),
            RegistrationError::InvalidSize { line: 3, .. }
        ));
    }

    #[test]
    fn size_too_large() {
        let e = err(format!("{A}\n{H}\n18446744073709551616\n\n0\n"));
        assert_eq!(
            e.to_string(),
            "line 3: NAR size 18446744073709551616 is too large: no NAR is larger than \
             18446744073709551615 bytes (2^64 - 1); is the file damaged?"
        );
        // The largest is fine.
        assert!(parse(&format!("{A}\n{H}\n18446744073709551615\n\n0\n")).is_ok());
        assert!(matches!(
            err(format!("{A}\n{H}\n1\n\n99999999999999999999999\n")),
            RegistrationError::CountTooLarge { line: 5, .. }
        ));
    }

    #[test]
    fn blank_lines_say_what_was_expected() {
        let e = err(format!("{A}\n{H}\n1\n\n0\n\n{B}\n{H}\n1\n\n0\n"));
        assert_eq!(
            e.to_string(),
            "line 6 is empty where a store path was expected; the only empty line a \
             registration holds is a missing deriver's: remove it, or write the closure again"
        );
        assert_eq!(
            err(format!("{A}\n\n1\n\n0\n")),
            RegistrationError::Blank {
                line: 2,
                expected: format!("the NAR hash of {A}")
            }
        );
        assert_eq!(
            err(format!("{A}\n{H}\n1\n\n1\n\n")),
            RegistrationError::Blank {
                line: 6,
                expected: format!("a reference of {A}")
            }
        );
    }

    #[test]
    fn invalid_deriver() {
        assert!(matches!(
            err(format!("{A}\n{H}\n1\nfoo.drv\n0\n")),
            RegistrationError::InvalidDeriver { line: 4, .. }
        ));
    }

    #[test]
    fn invalid_count() {
        assert!(matches!(
            err(format!("{A}\n{H}\n1\n\ntwo\n")),
            RegistrationError::InvalidCount { line: 5, .. }
        ));
    }

    #[test]
    fn invalid_reference() {
        assert!(matches!(
            err(format!("{A}\n{H}\n1\n\n1\n{A} \n")),
            RegistrationError::InvalidReference { line: 6, .. }
        ));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1024,
                // Nothing is written beside the sources (read-only in Nix).
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_text_parses_or_fails(text in "(?s).{0,400}") {
                let _ = parse(&text);
            }

            /// A valid registration with one byte changed and cut anywhere
            /// either fails or round-trips.
            #[test]
            fn damaged_sample(at in any::<prop::sample::Index>(), byte in any::<u8>(),
                              cut in any::<prop::sample::Index>()) {
                let mut bytes = sample().into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len()) + 1);
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(infos) = parse(&text) {
                    let again = Registration(&infos).to_string();
                    prop_assert_eq!(parse(&again).expect("reparse"), infos);
                }
            }
        }
    }
}
