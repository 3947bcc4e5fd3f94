//! Helpers shared by the fuzz targets.
//!
//! The `frame` and `stream` targets read their input as
//!
//! ```text
//! flags: u8 | cuts: ncuts × u16 (little endian) | wire bytes
//! ```
//!
//! where `ncuts = (flags >> 1) & 7` and bit 0 of `flags` is a per-target switch (the role
//! for `frame`, "we sent a close first" for `stream`). Each cut is taken modulo
//! `wire.len() + 1` and the cuts are sorted, so the wire is fed in `ncuts + 1` chunks,
//! some possibly empty. A short input simply has fewer cuts.

/// An input split into its flags, the wire bytes and the chunk boundaries.
#[derive(Debug)]
pub struct Input<'a> {
    /// The first byte (0 when the input is empty).
    pub flags: u8,
    /// The bytes to feed.
    pub wire: &'a [u8],
    /// Sorted cut positions, each in `0..=wire.len()`.
    pub cuts: Vec<usize>,
}

impl<'a> Input<'a> {
    /// Splits a raw fuzz input.
    pub fn parse(data: &'a [u8]) -> Self {
        let flags = data.first().copied().unwrap_or(0);
        let rest = data.get(1..).unwrap_or(&[]);
        let ncuts = usize::from((flags >> 1) & 7);
        let (raw, wire) = rest.split_at((ncuts * 2).min(rest.len()));
        let mut cuts: Vec<usize> = raw
            .chunks(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .map(|c| c % (wire.len() + 1))
            .collect();
        cuts.sort_unstable();
        Input { flags, wire, cuts }
    }

    /// Whether bit 0 of the flags is set.
    pub fn bit0(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The wire in chunks at the cut positions (empty chunks included).
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut start = 0;
        for &cut in &self.cuts {
            out.push(&self.wire[start..cut]);
            start = cut;
        }
        out.push(&self.wire[start..]);
        out
    }

    /// The wire one byte at a time.
    pub fn bytes(&self) -> Vec<&'a [u8]> {
        self.wire.chunks(1).collect()
    }
}
