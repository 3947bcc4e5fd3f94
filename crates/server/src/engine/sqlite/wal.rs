//! Checks a write-ahead log before SQLite opens it, to tell a crash's torn tail from
//! damage that is about to cost acknowledged commits.
//!
//! When SQLite opens a database whose log was not checkpointed (after `kill -9`), it
//! replays the log's frames up to the first one that fails validation and drops the rest
//! without a word. After a crash that is right: only the frame being written can be torn,
//! and nothing after it was committed. But if bytes in the middle of the log were
//! damaged, every commit after them is dropped too, including acknowledged ones, and the
//! store would go on handing out offsets that clients already saw under the same epoch.
//! This module reads the log first, by the documented format
//! (<https://www.sqlite.org/fileformat2.html#walformat>), and says whether frames of the
//! log's current generation (carrying its salts) follow the first invalid frame: that is
//! damage, not a torn tail. Pure: bytes in, a [`Verdict`] out.
//!
//! Format: a 32-byte header (big-endian fields: magic, version, page size, checkpoint
//! sequence, salt-1, salt-2, checksum-1, checksum-2), then frames of a 24-byte header
//! (page number, database size after a commit or 0, salt-1, salt-2, checksum-1,
//! checksum-2) and one page. Checksums run over 32-bit words, read in the byte order the
//! magic gives (`0x377f0682` little-endian, `0x377f0683` big-endian): the header's over
//! its first 24 bytes from zero, each frame's over its first 8 header bytes and its page,
//! continuing from the previous frame's (the first frame from the header's).

use std::io::Read;

/// Bytes of the log header.
const HEADER: usize = 32;
/// Bytes of a frame header.
const FRAME_HEADER: usize = 24;
/// The magic, with its low bit clear; the bit set means big-endian checksums.
const MAGIC: u32 = 0x377f_0682;
/// The only log format version there is.
const VERSION: u32 = 3_007_000;

/// What the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No log, or too short to hold a frame: nothing to replay.
    Empty,
    /// Valid to its end, or to a torn tail (what a crash leaves): SQLite will keep every
    /// commit that can have been acknowledged.
    Intact {
        /// Valid frames.
        frames: u64,
        /// Of them, commit frames.
        commits: u64,
    },
    /// Frames of the current log follow an invalid frame (or an invalid header): SQLite
    /// will drop them, and the commits among them may have been acknowledged.
    Damaged(Damage),
}

/// Where a log is damaged, and what will be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    /// Byte offset of the first frame that fails validation (0: the header).
    pub(super) offset: u64,
    /// Valid frames and commits before it, which SQLite keeps.
    pub(super) frames_before: u64,
    pub(super) commits_before: u64,
    /// Frames after it that carry the log's salts, and the commits among them: written
    /// after the damaged bytes, and about to be dropped. Counted by their slots' size
    /// when the header itself is damaged.
    pub(super) frames_after: u64,
    pub(super) commits_after: u64,
}

/// The header's fields that frames are checked against.
#[derive(Debug, Clone, Copy)]
struct Header {
    big_endian: bool,
    page_size: usize,
    salts: [u8; 8],
    checksum: (u32, u32),
}

/// Checks the log of the database at `database` (`<database>-wal`), if there is one.
pub(super) fn check_file(database: &std::path::Path) -> Result<Verdict, String> {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    let path = std::path::PathBuf::from(name);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Empty),
        Err(e) => return Err(format!("cannot read the log {}: {e}", path.display())),
    };
    check(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|e| format!("cannot read the log {}: {e}", path.display()))
}

/// Reads the log from `log` to its end and judges it.
pub(super) fn check(mut log: impl Read) -> std::io::Result<Verdict> {
    let mut head = [0u8; HEADER];
    let got = fill(&mut log, &mut head)?;
    if got < HEADER {
        return Ok(Verdict::Empty);
    }
    let Some(header) = parse_header(&head) else {
        // Whatever follows cannot be replayed: if a frame's worth of bytes does, it was
        // written under this header and is lost with it.
        let mut rest = Vec::new();
        log.read_to_end(&mut rest)?;
        if rest.len() < FRAME_HEADER + 512 {
            return Ok(Verdict::Empty);
        }
        let page_size = be(&head[8..12]) as usize;
        let slot = if valid_page_size(page_size) {
            page_size
        } else {
            4096
        };
        return Ok(Verdict::Damaged(Damage {
            offset: 0,
            frames_before: 0,
            commits_before: 0,
            frames_after: (rest.len() / (FRAME_HEADER + slot)) as u64,
            commits_after: 0,
        }));
    };

    let mut frame = vec![0u8; FRAME_HEADER + header.page_size];
    let mut sums = header.checksum;
    let (mut frames, mut commits) = (0u64, 0u64);
    let mut offset = HEADER as u64;
    loop {
        if fill(&mut log, &mut frame)? < frame.len() {
            // The end, or a frame cut short: a torn tail at most.
            return Ok(Verdict::Intact { frames, commits });
        }
        match frame_checksum(&header, sums, &frame) {
            Some(next) => {
                sums = next;
                frames += 1;
                if be(&frame[4..8]) != 0 {
                    commits += 1;
                }
                offset += frame.len() as u64;
            }
            None => break,
        }
    }
    // The first invalid frame is at `offset`. A crash leaves nothing of this log after
    // it; anything with its salts there was written after the damaged bytes.
    let (mut frames_after, mut commits_after) = (0u64, 0u64);
    while fill(&mut log, &mut frame)? == frame.len() {
        if frame[8..16] == header.salts && be(&frame[0..4]) != 0 {
            frames_after += 1;
            if be(&frame[4..8]) != 0 {
                commits_after += 1;
            }
        }
    }
    if frames_after == 0 {
        return Ok(Verdict::Intact { frames, commits });
    }
    Ok(Verdict::Damaged(Damage {
        offset,
        frames_before: frames,
        commits_before: commits,
        frames_after,
        commits_after,
    }))
}

/// The header if it is valid: magic, version, page size and checksum.
fn parse_header(head: &[u8; HEADER]) -> Option<Header> {
    let magic = be(&head[0..4]);
    if magic & !1 != MAGIC || be(&head[4..8]) != VERSION {
        return None;
    }
    let page_size = be(&head[8..12]) as usize;
    if !valid_page_size(page_size) {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let checksum = checksum(big_endian, (0, 0), &head[..24]);
    if checksum != (be(&head[24..28]), be(&head[28..32])) {
        return None;
    }
    let mut salts = [0u8; 8];
    salts.copy_from_slice(&head[16..24]);
    Some(Header {
        big_endian,
        page_size,
        salts,
        checksum,
    })
}

fn valid_page_size(size: usize) -> bool {
    (512..=65536).contains(&size) && size.is_power_of_two()
}

/// The running checksum after `frame` (header and page) if the frame is valid: the log's
/// salts, a page number, and the checksum continuing from `sums`.
fn frame_checksum(header: &Header, sums: (u32, u32), frame: &[u8]) -> Option<(u32, u32)> {
    if frame[8..16] != header.salts || be(&frame[0..4]) == 0 {
        return None;
    }
    let sums = checksum(header.big_endian, sums, &frame[..8]);
    let sums = checksum(header.big_endian, sums, &frame[FRAME_HEADER..]);
    (sums == (be(&frame[16..20]), be(&frame[20..24]))).then_some(sums)
}

/// SQLite's log checksum over `bytes` (a multiple of 8 long), continuing from `sums`:
/// for each pair of 32-bit words `x0, x1`, `s0 += x0 + s1; s1 += x1 + s0`, wrapping.
fn checksum(big_endian: bool, (mut s0, mut s1): (u32, u32), bytes: &[u8]) -> (u32, u32) {
    let word = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    for pair in bytes.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// A big-endian 32-bit field.
fn be(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 1024;
    const SALTS: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    /// A log under construction, as SQLite writes one.
    struct Log {
        bytes: Vec<u8>,
        big_endian: bool,
        salts: [u8; 8],
        sums: (u32, u32),
    }

    impl Log {
        fn new(big_endian: bool, salts: [u8; 8]) -> Log {
            let mut bytes = Vec::new();
            bytes.extend((MAGIC | big_endian as u32).to_be_bytes());
            bytes.extend(VERSION.to_be_bytes());
            bytes.extend((PAGE as u32).to_be_bytes());
            bytes.extend(7u32.to_be_bytes());
            bytes.extend(salts);
            let sums = checksum(big_endian, (0, 0), &bytes);
            bytes.extend(sums.0.to_be_bytes());
            bytes.extend(sums.1.to_be_bytes());
            Log {
                bytes,
                big_endian,
                salts,
                sums,
            }
        }

        /// Appends a frame for page `page` (filled with `fill`), a commit if `commit`.
        fn frame(mut self, page: u32, commit: bool, fill: u8) -> Log {
            let mut header = Vec::new();
            header.extend(page.to_be_bytes());
            header.extend(if commit { 10u32 } else { 0 }.to_be_bytes());
            header.extend(self.salts);
            let data: Vec<u8> = (0..PAGE).map(|i| fill.wrapping_add(i as u8)).collect();
            let sums = checksum(self.big_endian, self.sums, &header[..8]);
            self.sums = checksum(self.big_endian, sums, &data);
            header.extend(self.sums.0.to_be_bytes());
            header.extend(self.sums.1.to_be_bytes());
            self.bytes.extend(header);
            self.bytes.extend(data);
            self
        }

        /// Three transactions of two frames each.
        fn three_commits(big_endian: bool) -> Log {
            Log::new(big_endian, SALTS)
                .frame(2, false, 1)
                .frame(3, true, 2)
                .frame(2, false, 3)
                .frame(4, true, 4)
                .frame(5, false, 5)
                .frame(2, true, 6)
        }
    }

    fn at(frame: usize) -> usize {
        HEADER + frame * (FRAME_HEADER + PAGE)
    }

    fn verdict(bytes: &[u8]) -> Verdict {
        check(bytes).unwrap()
    }

    #[test]
    fn the_checksum_follows_the_documented_recurrence() {
        // Two pairs of words, by hand: s0 = 1 + 0, s1 = 2 + 1; s0 = 1 + 3 + 3, s1 = 3 + 4 + 7.
        let words: Vec<u8> = [1u32, 2, 3, 4]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(checksum(false, (0, 0), &words), (7, 14));
        let words: Vec<u8> = [1u32, 2, 3, 4]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(checksum(true, (0, 0), &words), (7, 14));
        // Wrapping, not overflowing.
        let max: Vec<u8> = [u32::MAX, u32::MAX]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(checksum(false, (1, 1), &max), (1, 1));
    }

    #[test]
    fn a_valid_log_is_intact_in_either_byte_order() {
        for big_endian in [false, true] {
            let log = Log::three_commits(big_endian);
            assert_eq!(
                verdict(&log.bytes),
                Verdict::Intact {
                    frames: 6,
                    commits: 3
                }
            );
        }
    }

    #[test]
    fn no_log_or_a_header_alone_is_empty_or_intact() {
        assert_eq!(verdict(&[]), Verdict::Empty);
        assert_eq!(verdict(&[0x37, 0x7f]), Verdict::Empty);
        let header = Log::new(false, SALTS).bytes;
        assert_eq!(
            verdict(&header),
            Verdict::Intact {
                frames: 0,
                commits: 0
            }
        );
    }

    /// What `kill -9` leaves: the last frame cut short, or its header written and its page
    /// not. SQLite drops only that transaction, which was never acknowledged.
    #[test]
    fn a_torn_tail_is_a_normal_crash_not_damage() {
        let whole = Log::three_commits(false)
            .frame(6, false, 7)
            .frame(7, true, 8);
        let intact = Verdict::Intact {
            frames: 7,
            commits: 3,
        };
        // Cut in the last frame's page, and in its header.
        for cut in [at(8) - PAGE / 2, at(7) + 10] {
            assert_eq!(verdict(&whole.bytes[..cut]), intact, "cut at {cut}");
        }
        // The last frame's header is there, its page is stale.
        let mut stale = whole.bytes.clone();
        stale[at(7) + FRAME_HEADER..at(8)].fill(0);
        assert_eq!(verdict(&stale), intact);
    }

    /// After a checkpoint SQLite writes the log again from the start with new salts; the
    /// old frames past the new ones are not damage.
    #[test]
    fn frames_of_an_earlier_log_are_not_damage() {
        let old = Log::three_commits(false).frame(6, true, 7);
        let mut salts = SALTS;
        salts[3] += 1;
        let new = Log::new(false, salts).frame(2, true, 9);
        let mut bytes = old.bytes.clone();
        bytes[..new.bytes.len()].copy_from_slice(&new.bytes);
        assert_eq!(
            verdict(&bytes),
            Verdict::Intact {
                frames: 1,
                commits: 1
            }
        );
        // Even with a torn frame between the new and the old ones.
        bytes[at(1) + 8..at(1) + 16].copy_from_slice(&salts);
        assert_eq!(
            verdict(&bytes),
            Verdict::Intact {
                frames: 1,
                commits: 1
            }
        );
    }

    /// 64 bytes overwritten in the middle (the case): the commits after them are
    /// about to be dropped, and the verdict says where and how many.
    #[test]
    fn damage_in_the_middle_is_found() {
        for big_endian in [false, true] {
            let log = Log::three_commits(big_endian);
            // In frame 2's page, then over frame 2's header (its salts included).
            for start in [at(2) + FRAME_HEADER + 300, at(2)] {
                let mut bytes = log.bytes.clone();
                bytes[start..start + 64].fill(0xa5);
                assert_eq!(
                    verdict(&bytes),
                    Verdict::Damaged(Damage {
                        offset: at(2) as u64,
                        frames_before: 2,
                        commits_before: 1,
                        frames_after: 3,
                        commits_after: 2,
                    }),
                    "64 bytes at {start}"
                );
            }
        }
    }

    #[test]
    fn a_damaged_header_with_frames_after_it_is_damage() {
        let log = Log::three_commits(false);
        let mut bytes = log.bytes.clone();
        bytes[24] ^= 1;
        assert_eq!(
            verdict(&bytes),
            Verdict::Damaged(Damage {
                offset: 0,
                frames_before: 0,
                commits_before: 0,
                frames_after: 6,
                commits_after: 0,
            })
        );
        // A damaged header alone loses nothing.
        assert_eq!(verdict(&bytes[..HEADER]), Verdict::Empty);
    }
}
