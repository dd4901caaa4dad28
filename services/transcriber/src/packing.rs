//! Full windows: Whisper costs the same for 3 s of speech as for 30 s (every window is encoded at
//! 30 s), so the speech of consecutive VAD chunks is packed into windows of up to 30 s, silence
//! between them removed (each chunk keeps its own short padding, so speech is still separated by
//! a short gap). A [`Window`] remembers where each piece came from, and maps every time Whisper
//! gives within the window back to media time exactly.

use crate::features::{SAMPLE_RATE, WINDOW_SAMPLES};
use crate::vad::{Chunk, PAD_SAMPLES};

/// A stretch of media audio placed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the piece's first sample in the window.
    pub window_sample: usize,
    /// Index of the same sample in the media.
    pub media_sample: u64,
    pub len: usize,
}

/// Which end of an interval a time is: a time on the boundary between two pieces is the start
/// of the later piece or the end of the earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

/// Up to 30 s of speech decoded in one Whisper window, and where each of its pieces lies in the
/// media.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub samples: Vec<f32>,
    pub pieces: Vec<Piece>,
}

impl Window {
    /// The chunks one after another (their total must fit a window; see [`chunks_per_window`]).
    pub fn from_chunks(chunks: impl IntoIterator<Item = Chunk>) -> Self {
        let mut window = Window::default();
        for chunk in chunks {
            window.pieces.push(Piece {
                window_sample: window.samples.len(),
                media_sample: chunk.start_sample,
                len: chunk.samples.len(),
            });
            window.samples.extend(chunk.samples);
        }
        window
    }

    /// The media time (s) of `at` (s from the window's start), as the `edge` of an interval.
    pub fn media_time(&self, at: f64, edge: Edge) -> f64 {
        let at_sample = (at.max(0.0) * SAMPLE_RATE as f64).round() as usize;
        let inside = |piece: &&Piece| match edge {
            Edge::Start => piece.window_sample <= at_sample,
            Edge::End => piece.window_sample < at_sample,
        };
        let Some(piece) = self
            .pieces
            .iter()
            .rev()
            .find(inside)
            .or_else(|| self.pieces.first())
        else {
            return at;
        };
        let offset = at_sample.saturating_sub(piece.window_sample).min(piece.len);
        (piece.media_sample + offset as u64) as f64 / SAMPLE_RATE as f64
    }

    /// The media span of a segment from `start` to `end` (s from the window's start). Whisper
    /// often puts a segment's edge in the silence kept around speech: a start in the padding at
    /// the end of a piece belongs to the next piece, an end in the padding at the start of a
    /// piece to the piece before, so that a segment does not stretch over the silence cut out.
    pub fn segment_span(&self, start: f64, end: f64) -> (f64, f64) {
        let to_sample = |at: f64| (at.max(0.0) * SAMPLE_RATE as f64).round() as usize;
        let to_time = |sample: usize| sample as f64 / SAMPLE_RATE as f64;
        let (mut first, mut last) = (to_sample(start), to_sample(end.max(start)));
        if let Some(next) =
            self.pieces.iter().skip(1).find(|piece| {
                piece.window_sample > first && piece.window_sample - first <= PAD_SAMPLES
            })
        {
            first = next.window_sample;
        }
        if let Some(piece) =
            self.pieces.iter().skip(1).find(|piece| {
                last > piece.window_sample && last - piece.window_sample <= PAD_SAMPLES
            })
        {
            last = piece.window_sample.max(first);
        }
        (
            self.media_time(to_time(first), Edge::Start),
            self.media_time(to_time(last), Edge::End),
        )
    }

    /// The media span of a word said from `start` to `end` (s from the window's start). A word
    /// is said in one place: when the alignment stretches it over the boundary between two
    /// pieces (into the silence that was cut out), it is kept in the piece holding most of it.
    pub fn word_span(&self, start: f64, end: f64) -> (f64, f64) {
        let to_sample = |at: f64| (at.max(0.0) * SAMPLE_RATE as f64).round() as usize;
        let (first, last) = (to_sample(start), to_sample(end.max(start)));
        let overlap = |piece: &Piece| {
            let piece_end = piece.window_sample + piece.len;
            piece_end
                .min(last)
                .saturating_sub(piece.window_sample.max(first))
        };
        // The piece holding most of the word; for a word of no length, the one holding it.
        let middle = (first + last) / 2;
        let holds = |piece: &&Piece| piece.window_sample <= middle;
        let piece = match self.pieces.iter().map(overlap).max() {
            Some(0) => self.pieces.iter().rev().find(holds).or(self.pieces.first()),
            _ => self.pieces.iter().rev().max_by_key(|piece| overlap(piece)),
        };
        let Some(piece) = piece else {
            return (start, end);
        };
        let clamp = |sample: usize| {
            let offset = sample.saturating_sub(piece.window_sample).min(piece.len);
            (piece.media_sample + offset as u64) as f64 / SAMPLE_RATE as f64
        };
        (clamp(first), clamp(last))
    }
}

/// How many chunks each window takes when chunks of these lengths (samples) are packed in order,
/// each window as full as it can be without passing 30 s.
pub fn chunks_per_window(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut windows: Vec<(usize, usize)> = Vec::new();
    for len in lengths {
        match windows.last_mut() {
            Some((count, total)) if *total + len <= WINDOW_SAMPLES => {
                *count += 1;
                *total += len;
            }
            _ => windows.push((1, len)),
        }
    }
    windows.into_iter().map(|(count, _)| count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = SAMPLE_RATE as u64;

    fn chunk(start_s: u64, seconds: usize) -> Chunk {
        Chunk {
            start_sample: start_s * RATE,
            samples: vec![0.1; seconds * SAMPLE_RATE],
        }
    }

    #[test]
    fn chunks_fill_each_window_up_to_thirty_seconds_in_order() {
        let s = SAMPLE_RATE;
        let cases: [(&[usize], &[usize]); 5] = [
            (&[], &[]),
            (&[5 * s, 5 * s, 5 * s], &[3]),
            (&[10 * s, 20 * s, 1], &[2, 1]),
            (&[30 * s, 30 * s, 2 * s], &[1, 1, 1]),
            (&[20 * s, 15 * s, 10 * s, 4 * s], &[1, 3]),
        ];
        for (lengths, expected) in cases {
            assert_eq!(
                chunks_per_window(lengths.iter().copied()),
                expected,
                "{lengths:?}"
            );
        }
    }

    #[test]
    fn times_in_a_window_map_back_to_the_media_piece_by_piece() {
        // 4 s from 10 s, 3 s from 100 s, 2 s from 200 s.
        let window = Window::from_chunks([chunk(10, 4), chunk(100, 3), chunk(200, 2)]);
        assert_eq!(window.samples.len(), 9 * SAMPLE_RATE);
        let cases = [
            // (time in the window, edge, media time)
            (0.0, Edge::Start, 10.0),
            (1.5, Edge::Start, 11.5),
            (1.5, Edge::End, 11.5),
            // The boundary between the first two pieces.
            (4.0, Edge::Start, 100.0),
            (4.0, Edge::End, 14.0),
            (6.25, Edge::End, 102.25),
            (7.0, Edge::Start, 200.0),
            (8.5, Edge::Start, 201.5),
            // Past the audio (a segment Whisper ran to the window's end): the last piece's end.
            (30.0, Edge::End, 202.0),
        ];
        for (at, edge, media) in cases {
            let mapped = window.media_time(at, edge);
            assert!(
                (mapped - media).abs() < 1e-9,
                "{at} as {edge:?}: {mapped}, expected {media}"
            );
        }
        assert_eq!(Window::default().media_time(3.0, Edge::Start), 3.0);
    }

    #[test]
    fn segment_edges_in_the_padding_around_a_cut_stay_on_their_side_of_it() {
        let window = Window::from_chunks([chunk(10, 4), chunk(100, 3)]);
        let pad = PAD_SAMPLES as f64 / SAMPLE_RATE as f64;
        let cases = [
            // (segment in the window, media span)
            ((0.5, 3.0), (10.5, 13.0)),
            // Starts in the first piece's trailing padding: starts with the second piece.
            ((4.0 - pad / 2.0, 6.0), (100.0, 102.0)),
            // Ends in the second piece's leading padding: ends with the first piece.
            ((1.0, 4.0 + pad / 2.0), (11.0, 14.0)),
            // Spans the cut with speech on both sides: from one piece to the other.
            ((2.0, 6.0), (12.0, 102.0)),
        ];
        for ((start, end), (media_start, media_end)) in cases {
            let (mapped_start, mapped_end) = window.segment_span(start, end);
            assert!(
                (mapped_start - media_start).abs() < 1e-9 && (mapped_end - media_end).abs() < 1e-9,
                "{start}–{end}: {mapped_start}–{mapped_end}"
            );
        }
    }

    #[test]
    fn a_word_stretched_over_a_boundary_stays_in_the_piece_holding_most_of_it() {
        let window = Window::from_chunks([chunk(10, 4), chunk(100, 3)]);
        let cases = [
            // (word in the window, media span)
            ((1.0, 1.5), (11.0, 11.5)),
            // Mostly in the second piece: starts where that piece starts.
            ((3.8, 4.6), (100.0, 100.6)),
            // Mostly in the first piece: ends where that piece ends.
            ((3.2, 4.1), (13.2, 14.0)),
            ((5.0, 9.0), (101.0, 103.0)),
            // No length: the piece that holds it.
            ((1.0, 1.0), (11.0, 11.0)),
            ((4.5, 4.5), (100.5, 100.5)),
        ];
        for ((start, end), (media_start, media_end)) in cases {
            let (mapped_start, mapped_end) = window.word_span(start, end);
            assert!(
                (mapped_start - media_start).abs() < 1e-9 && (mapped_end - media_end).abs() < 1e-9,
                "{start}–{end}: {mapped_start}–{mapped_end}"
            );
        }
    }
}
