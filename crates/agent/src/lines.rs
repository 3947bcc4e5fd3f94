//! Bytes to lines: the part of tailing that needs no file (sans-IO, like the codecs of
//! crates/ws), shared by the file tails and the commands' output.
//!
//! A line ends at `\n` (a `\r` before it is dropped). A line longer than the limit keeps
//! its first `max` bytes (cut at a character boundary) and gets ` […N bytes cut]`, and
//! the rest is skipped without being stored: memory per source stays at `max` bytes
//! whatever the writer does. Invalid UTF-8 becomes U+FFFD; nothing here can fail.

/// Splits a byte stream into lines.
#[derive(Debug)]
pub struct LineSplitter {
    /// The longest line kept whole, in bytes.
    max: usize,
    /// The start of the line being read (at most `max` bytes).
    partial: Vec<u8>,
    /// Bytes of the current line skipped past `max`.
    cut: u64,
}

impl LineSplitter {
    /// A splitter that cuts lines longer than `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max: max.max(1),
            partial: Vec::new(),
            cut: 0,
        }
    }

    /// Feeds bytes; each complete line is passed to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut impl FnMut(String)) {
        while !bytes.is_empty() {
            let (chunk, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let chunk = &bytes[..at];
                    bytes = &bytes[at + 1..];
                    (chunk, true)
                }
                None => {
                    let chunk = bytes;
                    bytes = &[];
                    (chunk, false)
                }
            };
            let room = self.max.saturating_sub(self.partial.len());
            let keep = chunk.len().min(room);
            self.partial.extend_from_slice(&chunk[..keep]);
            self.cut += (chunk.len() - keep) as u64;
            if ended {
                out(self.take_line());
            }
        }
    }

    /// Whether part of a line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty() || self.cut > 0
    }

    /// The unfinished line, as a line (when its file was rotated or truncated, or its
    /// command ended: no `\n` will come).
    pub fn finish(&mut self) -> Option<String> {
        self.has_partial().then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.partial);
        if self.cut == 0 && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut cut = std::mem::take(&mut self.cut);
        if cut > 0 {
            // A cut through a character would leave half of it: cut before it instead.
            let invalid = std::str::from_utf8(&bytes).err();
            if let Some(e) = invalid {
                if e.error_len().is_none() {
                    cut += (bytes.len() - e.valid_up_to()) as u64;
                    bytes.truncate(e.valid_up_to());
                }
            }
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if cut > 0 {
            text.push_str(&format!(" […{cut} bytes cut]"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, pieces: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut s = LineSplitter::new(max);
        let mut lines = Vec::new();
        for piece in pieces {
            s.push(piece, &mut |l| lines.push(l));
        }
        (lines, s.finish())
    }

    #[test]
    fn lines_end_at_newlines_whatever_the_pieces() {
        let text = b"one\r\ntwo\n\nthree\nfour";
        for at in 0..=text.len() {
            let (lines, rest) = split(100, &[&text[..at], &text[at..]]);
            assert_eq!(lines, ["one", "two", "", "three"], "split at {at}");
            assert_eq!(rest.as_deref(), Some("four"));
        }
    }

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let (lines, rest) = split(4, &[b"abcdefgh\nab", b"cdef\nxy\n"]);
        assert_eq!(lines, ["abcd […4 bytes cut]", "abcd […2 bytes cut]", "xy"]);
        assert_eq!(rest, None);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "é" is two bytes: a 4-byte cut after "abc" would keep half of it.
        let (lines, _) = split(4, &["abcéz\n".as_bytes()]);
        assert_eq!(lines, ["abc […3 bytes cut]"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (lines, _) = split(100, &[b"a\xffb\xc3\n"]);
        assert_eq!(lines, ["a\u{fffd}b\u{fffd}"]);
    }
}
