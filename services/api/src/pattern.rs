//! Finding a byte pattern in a stream that arrives in chunks, without buffering it.

/// Finds a pattern in a stream of chunks (Knuth–Morris–Pratt, so a match may span chunks).
#[derive(Debug)]
pub(crate) struct StreamMatcher {
    pattern: Vec<u8>,
    /// For each prefix length, the longest proper prefix that is also its suffix.
    fallback: Vec<usize>,
    matched: usize,
}

impl StreamMatcher {
    pub(crate) fn new(pattern: Vec<u8>) -> Self {
        let mut fallback = vec![0; pattern.len() + 1];
        let mut k = 0;
        for i in 1..pattern.len() {
            while k > 0 && pattern[i] != pattern[k] {
                k = fallback[k];
            }
            if pattern[i] == pattern[k] {
                k += 1;
            }
            fallback[i + 1] = k;
        }
        Self {
            pattern,
            fallback,
            matched: 0,
        }
    }

    /// Reads `bytes` up to the end of the first match: returns how many bytes it read and
    /// whether the pattern ended there.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        let first = self.pattern[0];
        let mut i = 0;
        while i < bytes.len() {
            if self.matched == 0 {
                // Fast path: skip to the next byte that can start a match.
                match memchr::memchr(first, &bytes[i..]) {
                    Some(offset) => i += offset,
                    None => return (bytes.len(), false),
                }
            }
            let byte = bytes[i];
            while self.matched > 0 && byte != self.pattern[self.matched] {
                self.matched = self.fallback[self.matched];
            }
            if byte == self.pattern[self.matched] {
                self.matched += 1;
            }
            i += 1;
            if self.matched == self.pattern.len() {
                self.matched = 0;
                return (i, true);
            }
        }
        (bytes.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each match ends in `text` fed in pieces of `piece` bytes.
    fn match_ends(pattern: &str, text: &str, piece: usize) -> Vec<usize> {
        let mut matcher = StreamMatcher::new(pattern.as_bytes().to_vec());
        let mut ends = Vec::new();
        let mut offset = 0;
        for mut chunk in text.as_bytes().chunks(piece) {
            while !chunk.is_empty() {
                let (read, found) = matcher.feed(chunk);
                offset += read;
                if found {
                    ends.push(offset);
                }
                chunk = &chunk[read..];
            }
        }
        ends
    }

    #[test]
    fn matches_are_found_across_chunks_and_overlaps() {
        let cases = [
            ("\r\n\r\n", "a\r\n\r\r\n\r\nb", vec![8]),
            ("aab", "aaab aab", vec![4, 8]),
            ("abab", "abababab", vec![4, 8]),
            ("--b", "---b--b", vec![4, 7]),
            ("xyz", "no match here", vec![]),
        ];
        for (pattern, text, expected) in cases {
            for piece in [1, 2, 3, text.len()] {
                assert_eq!(
                    match_ends(pattern, text, piece),
                    expected,
                    "{pattern:?} in pieces of {piece}"
                );
            }
        }
    }
}
