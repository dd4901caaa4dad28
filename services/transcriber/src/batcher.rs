//! [`AudioBatcher`]: turns the PCM stream into batches of windows of speech for Whisper (the
//! VAD's chunks packed by [`packing`](crate::packing)), holding a bounded amount of audio (about
//! (batch + 1) windows read ahead) and of speech cut and not handed out (about two batches), and
//! knows from which sample the work is still to do.

use std::collections::VecDeque;

use crate::features::WINDOW_SAMPLES;
use crate::packing::{Window, chunks_per_window};
use crate::vad::{self, Chunk};

/// PCM bytes in, batches of at most `batch_size` windows of speech out.
#[derive(Debug)]
pub struct AudioBatcher {
    /// Samples read and not yet cut into chunks.
    buffer: Vec<f32>,
    /// Media sample of `buffer[0]`.
    origin: u64,
    /// A read may end in the middle of a 2-byte sample: its first byte.
    odd_byte: Option<u8>,
    /// Chunks cut and not yet handed out.
    pending: VecDeque<Chunk>,
    batch_size: usize,
    /// The audio has ended: whatever is left is cut and handed out.
    finished: bool,
}

impl AudioBatcher {
    /// A batcher for audio that starts at media sample `origin`.
    pub fn new(origin: u64, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        Self {
            buffer: Vec::with_capacity(read_ahead_samples(batch_size) + WINDOW_SAMPLES),
            origin,
            odd_byte: None,
            pending: VecDeque::new(),
            batch_size,
            finished: false,
        }
    }

    /// Adds s16le bytes; once a batch and one more window are buffered, cuts them into chunks.
    pub fn push_pcm(&mut self, bytes: &[u8]) {
        append_pcm(&mut self.buffer, &mut self.odd_byte, bytes);
        if self.buffer.len() >= read_ahead_samples(self.batch_size) {
            self.cut();
        }
    }

    /// The audio has ended: cuts what is left.
    pub fn finish(&mut self) {
        self.finished = true;
        self.cut();
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next batch: `batch_size` full windows, or what is left once the audio has ended.
    pub fn take_batch(&mut self) -> Option<Vec<Window>> {
        let windows = chunks_per_window(self.pending.iter().map(|chunk| chunk.samples.len()));
        let complete = complete_windows(windows.len(), self.finished);
        if complete == 0 || (complete < self.batch_size && !self.finished) {
            return None;
        }
        let batch = windows[..complete.min(self.batch_size)]
            .iter()
            .map(|&chunks| Window::from_chunks(self.pending.drain(..chunks)))
            .collect();
        Some(batch)
    }

    /// The media sample from which audio is still to be transcribed: everything before the next
    /// chunk not handed out (or before the audio not yet cut) is done once the batches handed
    /// out are.
    pub fn resume_sample(&self) -> u64 {
        self.pending
            .front()
            .map_or(self.origin, |chunk| chunk.start_sample)
    }

    fn cut(&mut self) {
        let (chunks, consumed) = vad::split(&self.buffer, self.origin, self.finished);
        self.buffer.drain(..consumed);
        self.origin += consumed as u64;
        self.pending.extend(chunks);
    }
}

/// Of `windows` packed from the pending chunks, those that can no longer grow: all once the
/// audio has ended, else all but the last (the next chunk may still fit in it).
fn complete_windows(windows: usize, finished: bool) -> usize {
    if finished {
        windows
    } else {
        windows.saturating_sub(1)
    }
}

/// Audio read ahead of the chunker: the batch plus one window, so that every chunk of the batch
/// can find its end.
fn read_ahead_samples(batch_size: usize) -> usize {
    (batch_size + 1) * WINDOW_SAMPLES
}

/// Appends s16le bytes to `samples` as f32 in [-1, 1], carrying an odd trailing byte over.
fn append_pcm(samples: &mut Vec<f32>, odd_byte: &mut Option<u8>, mut bytes: &[u8]) {
    if let Some(low) = odd_byte.take() {
        match bytes.split_first() {
            Some((&high, rest)) => {
                samples.push(f32::from(i16::from_le_bytes([low, high])) / 32768.0);
                bytes = rest;
            }
            None => {
                *odd_byte = Some(low);
                return;
            }
        }
    }
    let mut pairs = bytes.chunks_exact(2);
    samples.extend(
        pairs
            .by_ref()
            .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0),
    );
    if let [low] = pairs.remainder() {
        *odd_byte = Some(*low);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_msgs::pcm::SAMPLE_RATE;

    #[test]
    fn pcm_split_across_reads_decodes_whole_samples() {
        let mut samples = Vec::new();
        let mut odd = None;
        let bytes: Vec<u8> = [1000i16, -2000, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        append_pcm(&mut samples, &mut odd, &bytes[..3]);
        append_pcm(&mut samples, &mut odd, &bytes[3..]);
        let back: Vec<i16> = samples
            .iter()
            .map(|s| (s * 32768.0).round() as i16)
            .collect();
        assert_eq!(back, vec![1000, -2000, 32767]);
        assert_eq!(odd, None);
    }

    /// PCM bytes: `speech` seconds of a loud tone after `silence` seconds of silence, repeated.
    fn pcm(pattern: &[(f64, f64)]) -> Vec<u8> {
        let rate = f64::from(SAMPLE_RATE);
        let mut samples: Vec<i16> = Vec::new();
        for &(silence, speech) in pattern {
            samples.extend(std::iter::repeat_n(0, (silence * rate) as usize));
            let tone =
                (0..(speech * rate) as usize).map(|i| ((i as f64 * 0.07).sin() * 12_000.0) as i16);
            samples.extend(tone);
        }
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Feeds `bytes` in reads of `read` bytes; returns each batch's windows, as the media
    /// starts (s) of their pieces, and the resume point (s) after it.
    fn batches(bytes: &[u8], read: usize, batch_size: usize) -> Vec<(Vec<Vec<f64>>, f64)> {
        let seconds = |sample: u64| sample as f64 / f64::from(SAMPLE_RATE);
        let mut batcher = AudioBatcher::new(0, batch_size);
        let mut batches = Vec::new();
        let mut reads = bytes.chunks(read);
        loop {
            while let Some(batch) = batcher.take_batch() {
                let windows = batch
                    .iter()
                    .map(|w| w.pieces.iter().map(|p| seconds(p.media_sample)).collect())
                    .collect();
                batches.push((windows, seconds(batcher.resume_sample())));
            }
            match reads.next() {
                Some(read) => batcher.push_pcm(read),
                None if batcher.is_finished() => return batches,
                None => batcher.finish(),
            }
        }
    }

    #[test]
    fn speech_comes_out_in_batches_of_full_windows_with_the_point_to_resume_from() {
        // Six bursts of 12 s of speech, 10 s apart: each is a chunk of its own, silence dropped,
        // and two fit in a window.
        let mut pattern = vec![(1.0, 12.0)];
        pattern.extend([(10.0, 12.0); 5]);
        let audio = pcm(&pattern);
        let cases: [(usize, usize, usize); 3] = [
            // (bytes per read, batch size, batches expected)
            (64_001, 2, 2),
            (7, 3, 1),
            (1_000_000, 1, 3),
        ];
        for (read, batch_size, expected) in cases {
            let out = batches(&audio, read, batch_size);
            assert_eq!(
                out.len(),
                expected,
                "read {read}, batch {batch_size}: {out:?}"
            );
            let windows: Vec<Vec<f64>> = out.iter().flat_map(|(w, _)| w.clone()).collect();
            assert_eq!(windows.len(), 3, "{out:?}");
            assert!(windows.iter().all(|pieces| pieces.len() == 2), "{out:?}");
            let starts: Vec<f64> = windows.concat();
            for (start, burst) in starts.iter().zip([1.0, 23.0, 45.0, 67.0, 89.0, 111.0]) {
                assert!((burst - 0.3..=burst).contains(start), "{starts:?}");
            }
            // Each resume point lies after the batch it follows and before the next one.
            for pair in out.windows(2) {
                let (resume, next_start) = (pair[0].1, pair[1].0[0][0]);
                let last_start = pair[0].0.concat().last().copied().unwrap_or(0.0);
                assert!(resume <= next_start && resume > last_start, "{out:?}");
            }
            assert_eq!(out.last().map(|(_, resume)| *resume), Some(123.0));
        }
    }

    #[test]
    fn only_silence_gives_no_batch_and_resumes_at_the_end() {
        let audio = pcm(&[(70.0, 0.0)]);
        let mut batcher = AudioBatcher::new(16_000, 1);
        batcher.push_pcm(&audio);
        batcher.finish();
        assert!(batcher.take_batch().is_none());
        assert_eq!(batcher.resume_sample(), 16_000 + 70 * 16_000);
    }
}
