//! UTF-8: a validated byte buffer and an incremental validator.
//!
//! Text must be rejected at the first invalid sequence, even in the middle of a frame whose
//! end has not arrived yet (RFC 6455 §8.1, "fail fast"). [`Utf8Validator`] therefore keeps
//! at most 3 bytes of an unfinished character between calls and never rescans what it has
//! already accepted. Whole chunks go through `simdutf8`.

use bytes::Bytes;

/// An immutable, cheaply cloneable buffer that is known to hold valid UTF-8.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Utf8Bytes(Bytes::new())
    }

    /// Wraps a static string without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes that the caller has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validates the bytes (`TryFrom`, `From<String>`,
        // `from_static`) or is crate-private and only called after validation
        // (`from_validated`), and the buffer is immutable.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = simdutf8::basic::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        simdutf8::basic::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

/// The input is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Validates UTF-8 fed in arbitrary pieces, failing as soon as a sequence can no longer
/// become valid.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a character cut by the end of the previous piece.
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is pending (the text so far ends on a character boundary).
    pub fn is_clean(&self) -> bool {
        self.partial_len == 0
    }

    /// Feeds the next piece of the text.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Invalid> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = char_width(self.partial[0]).ok_or(Invalid)? - have;
            let take = need.min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let filled = have + take;
            match simdutf8::compat::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(Invalid),
                Err(_) => {
                    // Still incomplete: `take < need`, so the input is used up.
                    self.partial_len = filled as u8;
                    return Ok(());
                }
            }
            input = &input[take..];
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                // A valid prefix followed by the start of a character (at most 3 bytes).
                let rest = &input[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the text: an unfinished character at the end is invalid.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let clean = self.is_clean();
        self.partial_len = 0;
        if clean { Ok(()) } else { Err(Invalid) }
    }
}

/// The length of a character from its first byte, for bytes that may start one.
fn char_width(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], at: &[usize]) -> Result<(), Invalid> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in at {
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn every_two_way_split_agrees_with_std() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "hello, 世界 🎉!".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xf0\x9f\x8e",
            b"abc\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xff",
        ];
        for data in samples {
            let expected = std::str::from_utf8(data).is_ok();
            for i in 0..=data.len() {
                for j in i..=data.len() {
                    assert_eq!(
                        feed_split(data, &[i, j]).is_ok(),
                        expected,
                        "{data:?} {i} {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc6455_8_1_fails_fast_before_the_text_ends() {
        // "κόσμε" then the UTF-16 surrogate ED A0 80: the error shows on the byte after ED.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(b"\xed").unwrap();
        assert_eq!(v.feed(b"\xa0"), Err(Invalid));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xf5"), Err(Invalid));
    }

    #[test]
    fn byte_at_a_time() {
        let text = "Ünïcødé ✓ 🎉".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }
}
