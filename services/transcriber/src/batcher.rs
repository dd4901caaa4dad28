//! [`AudioBatcher`]: turns the PCM stream into batches of windows of speech for Whisper (the
//! VAD's chunks packed by [`packing`](crate::packing)), holding a bounded amount of audio (up to
//! a window read and not yet through the VAD, what the VAD still needs, and the speech cut and not
//! handed out: about two batches), and knows from which sample the work is still to do.

use std::collections::VecDeque;

use crate::features::WINDOW_SAMPLES;
use crate::packing::{Window, chunks_per_window};
use crate::silero::VadError;
use crate::vad::{Chunk, SpeechCutter};

/// PCM bytes in, batches of at most `batch_size` windows of speech out.
#[derive(Debug)]
pub struct AudioBatcher {
    /// Samples read and not yet through the VAD.
    buffer: Vec<f32>,
    /// A read may end in the middle of a 2-byte sample: its first byte.
    odd_byte: Option<u8>,
    cutter: SpeechCutter,
    /// Chunks cut and not yet handed out.
    pending: VecDeque<Chunk>,
    batch_size: usize,
    /// The audio has ended: whatever is left is cut and handed out.
    finished: bool,
}

impl AudioBatcher {
    /// A batcher for the audio that `cutter` starts at.
    pub fn new(cutter: SpeechCutter, batch_size: usize) -> Self {
        Self {
            buffer: Vec::with_capacity(WINDOW_SAMPLES),
            odd_byte: None,
            cutter,
            pending: VecDeque::new(),
            batch_size: batch_size.max(1),
            finished: false,
        }
    }

    /// Adds s16le bytes; returns whether a window of audio waits for the VAD ([`Self::cut`]).
    pub fn push_pcm(&mut self, bytes: &[u8]) -> bool {
        append_pcm(&mut self.buffer, &mut self.odd_byte, bytes);
        self.buffer.len() >= WINDOW_SAMPLES
    }

    /// Runs the VAD over the audio read (blocking: a few milliseconds per second of audio).
    pub fn cut(&mut self) -> Result<(), VadError> {
        let chunks = self.cutter.push(&self.buffer)?;
        self.buffer.clear();
        self.pending.extend(chunks);
        Ok(())
    }

    /// The audio has ended: cuts what is left (blocking, as [`Self::cut`]).
    pub fn finish(&mut self) -> Result<(), VadError> {
        self.cut()?;
        let chunks = self.cutter.finish()?;
        self.pending.extend(chunks);
        self.finished = true;
        Ok(())
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
    /// chunk not handed out (or before the audio the VAD still holds) is done once the batches
    /// handed out are.
    pub fn resume_sample(&self) -> u64 {
        self.pending
            .front()
            .map_or_else(|| self.cutter.resume_sample(), |chunk| chunk.start_sample)
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
    use crate::test_audio;
    use crate::vad::VadOptions;
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

    /// PCM bytes: `silence` seconds of silence, then a clip of speech (8.7 s), repeated.
    fn pcm(silences: &[f64]) -> Vec<u8> {
        let speech = test_audio::clip("librispeech.wav");
        let mut samples: Vec<f32> = Vec::new();
        for &silence in silences {
            samples.extend(std::iter::repeat_n(0.0, (silence * 16_000.0) as usize));
            samples.extend(&speech);
        }
        samples
            .iter()
            .flat_map(|s| ((s * 32768.0).round() as i16).to_le_bytes())
            .collect()
    }

    fn batcher(origin: u64, batch_size: usize) -> AudioBatcher {
        let cutter = SpeechCutter::new(
            test_audio::silero().stream(),
            VadOptions::faster_whisper(2000),
            origin,
        );
        AudioBatcher::new(cutter, batch_size)
    }

    /// Feeds `bytes` in reads of `read` bytes; returns each batch's windows, as the media
    /// starts (s) of their pieces, and the resume point (s) after it.
    fn batches(bytes: &[u8], read: usize, batch_size: usize) -> Vec<(Vec<Vec<f64>>, f64)> {
        let seconds = |sample: u64| sample as f64 / f64::from(SAMPLE_RATE);
        let mut batcher = batcher(0, batch_size);
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
                Some(read) => {
                    if batcher.push_pcm(read) {
                        batcher.cut().expect("the VAD runs");
                    }
                }
                None if batcher.is_finished() => return batches,
                None => batcher.finish().expect("the VAD runs"),
            }
        }
    }

    #[test]
    fn speech_comes_out_in_batches_of_full_windows_with_the_point_to_resume_from() {
        // Six clips of 8.7 s of speech, 10 s apart: each is a chunk of its own (9.5 s with its
        // padding), silence dropped, and three fit in a window.
        let audio = pcm(&[1.0, 10.0, 10.0, 10.0, 10.0, 10.0]);
        let clip_s = 139_680.0 / 16_000.0;
        let clip_starts: Vec<f64> = (0..6).map(|i| 1.0 + i as f64 * (10.0 + clip_s)).collect();
        let cases: [(usize, usize, usize); 3] = [
            // (bytes per read, batch size, batches expected)
            (64_001, 1, 2),
            (7_777, 3, 1),
            (4_000_000, 1, 2),
        ];
        for (read, batch_size, expected) in cases {
            let out = batches(&audio, read, batch_size);
            assert_eq!(
                out.len(),
                expected,
                "read {read}, batch {batch_size}: {out:?}"
            );
            let windows: Vec<Vec<f64>> = out.iter().flat_map(|(w, _)| w.clone()).collect();
            assert_eq!(windows.len(), 2, "{out:?}");
            assert!(windows.iter().all(|pieces| pieces.len() == 3), "{out:?}");
            let starts: Vec<f64> = windows.concat();
            for (start, clip) in starts.iter().zip(&clip_starts) {
                // The clip's speech starts within its first half second; the padding is 0.4 s.
                assert!((clip - 0.4..=clip + 0.5).contains(start), "{starts:?}");
            }
            // Each resume point lies after the batch it follows and before the next one.
            for pair in out.windows(2) {
                let (resume, next_start) = (pair[0].1, pair[1].0[0][0]);
                let last_start = pair[0].0.concat().last().copied().unwrap_or(0.0);
                assert!(resume <= next_start && resume > last_start, "{out:?}");
            }
            let end_s = audio.len() as f64 / 2.0 / 16_000.0;
            assert_eq!(out.last().map(|(_, resume)| *resume), Some(end_s));
        }
    }

    #[test]
    fn only_silence_gives_no_batch_and_resumes_at_the_end() {
        let audio = vec![0u8; 70 * 16_000 * 2];
        let mut batcher = batcher(16_000, 1);
        assert!(batcher.push_pcm(&audio));
        batcher.cut().expect("the VAD runs");
        batcher.finish().expect("the VAD runs");
        assert!(batcher.take_batch().is_none());
        assert_eq!(batcher.resume_sample(), 16_000 + 70 * 16_000);
    }
}
