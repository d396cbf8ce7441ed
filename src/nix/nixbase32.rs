//! Nix's base32 ("nixbase32"): the alphabet without `e o u t`, digits read
//! from the end of the string. Same names as nix-compat's `nixbase32` module
//! so the two can be swapped.
//!
//! Format: <https://nix.dev/manual/nix/latest/protocols/nix32>

use thiserror::Error;

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Nixbase32DecodeError {
    #[error("character {0:?} at position {1} is not in the nixbase32 alphabet")]
    CharacterNotInAlphabet(char, usize),
    #[error("nonzero trailing bits: not the encoding of any byte string")]
    NonzeroCarry,
    #[error("invalid length {0} for a nixbase32 string")]
    InvalidLength(usize),
}

/// Length of the encoding of `len` bytes.
pub const fn encode_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Length of the decoding of an `len`-character string, if such strings exist.
pub const fn decode_len(len: usize) -> usize {
    (len * 5) / 8
}

pub fn encode(input: &[u8]) -> String {
    let len = encode_len(input.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let lo = input[i] as u16 >> j;
        let hi = input.get(i + 1).map_or(0, |&h| (h as u16) << (8 - j));
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

pub fn decode(input: impl AsRef<[u8]>) -> Result<Vec<u8>, Nixbase32DecodeError> {
    let input = input.as_ref();
    let out_len = decode_len(input.len());
    if encode_len(out_len) != input.len() {
        return Err(Nixbase32DecodeError::InvalidLength(input.len()));
    }
    let mut out = vec![0u8; out_len];
    for (n, &c) in input.iter().rev().enumerate() {
        let pos = input.len() - 1 - n;
        let d = digit(c).ok_or(Nixbase32DecodeError::CharacterNotInAlphabet(c as char, pos))?;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= d << j;
        let carry = (d as u16) >> (8 - j);
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry as u8,
            None if carry != 0 => return Err(Nixbase32DecodeError::NonzeroCarry),
            None => {}
        }
    }
    Ok(out)
}

/// Decode into a fixed-size array, as store path hashes and digests need.
pub fn decode_fixed<const N: usize>(
    input: impl AsRef<[u8]>,
) -> Result<[u8; N], Nixbase32DecodeError> {
    let input = input.as_ref();
    if input.len() != encode_len(N) {
        return Err(Nixbase32DecodeError::InvalidLength(input.len()));
    }
    let v = decode(input)?;
    v.try_into()
        .map_err(|v: Vec<u8>| Nixbase32DecodeError::InvalidLength(v.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // From Nix's own test suite (libutil hash tests).
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x1f]), "0z");
        let sha256_empty = data_encoding::HEXLOWER
            .decode(b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .expect("hex");
        assert_eq!(
            encode(&sha256_empty),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(
            decode("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").expect("decode"),
            sha256_empty
        );
    }

    #[test]
    fn round_trip() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(encode(&data)).expect("decode"), data);
        }
    }

    #[test]
    fn bad_character() {
        assert_eq!(
            decode("0e"),
            Err(Nixbase32DecodeError::CharacterNotInAlphabet('e', 1))
        );
    }

    #[test]
    fn bad_length() {
        assert_eq!(decode("000"), Err(Nixbase32DecodeError::InvalidLength(3)));
    }

    #[test]
    fn nonzero_carry() {
        // Two characters hold 10 bits; only 8 fit in one byte.
        assert_eq!(decode("z0"), Err(Nixbase32DecodeError::NonzeroCarry));
    }
}
