//! An energy-based voice activity detector that cuts 16 kHz audio into chunks of speech of at
//! most 30 s, at pauses rather than mid-word, and drops long silences. Whisper decodes each chunk
//! in one window, so no word straddles two windows and no time is spent on silence.

/// Analysis frame: 30 ms.
pub const FRAME: usize = 480;
/// Whisper's window: a chunk never exceeds it.
pub const MAX_CHUNK_FRAMES: usize = 1000;
/// A chunk is not cut shorter than this unless the speech stops.
const MIN_CHUNK_FRAMES: usize = 500;
/// A silence this long ends a chunk (and is dropped).
const SILENCE_END_FRAMES: usize = 40;
/// Frames around the cut that are averaged to find the quietest place.
const SMOOTH_FRAMES: usize = 5;
/// Speech is at most this far below the loud part of the buffer, in dB.
const DYNAMIC_RANGE_DB: f32 = 35.0;
/// Below this, a frame is silence whatever the rest of the buffer (about -60 dBFS).
const ABSOLUTE_FLOOR_DB: f32 = -60.0;
/// Silence kept on each side of the speech in a chunk: Whisper needs the onset.
const PAD_FRAMES: usize = 7;
/// The same, in samples: the silence around the speech of every chunk.
pub const PAD_SAMPLES: usize = PAD_FRAMES * FRAME;

/// A piece of speech to transcribe.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Index of the chunk's first sample in the media.
    pub start_sample: u64,
    pub samples: Vec<f32>,
}

fn frame_db(frame: &[f32]) -> f32 {
    let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * (energy + 1e-12).log10()
}

/// Cuts `samples` (whose first sample is media sample `origin`) into chunks. Unless `at_end`,
/// audio that may belong to a chunk continuing past the buffer is left for the next call.
/// Returns the chunks and the number of samples consumed (dropped from the front by the caller).
pub fn split(samples: &[f32], origin: u64, at_end: bool) -> (Vec<Chunk>, usize) {
    let levels: Vec<f32> = samples.chunks(FRAME).map(frame_db).collect();
    let frames = levels.len();
    let mut sorted = levels.clone();
    sorted.sort_by(f32::total_cmp);
    let loud = sorted
        .get(sorted.len().saturating_sub(1) * 95 / 100)
        .copied()
        .unwrap_or(ABSOLUTE_FLOOR_DB);
    let threshold = (loud - DYNAMIC_RANGE_DB).max(ABSOLUTE_FLOOR_DB);
    let is_speech = |frame: usize| levels[frame] > threshold;

    let mut chunks = Vec::new();
    let mut position = 0;
    loop {
        while position < frames && !is_speech(position) {
            position += 1;
        }
        if position >= frames {
            // Only silence left: all of it is consumed (at the end) or all but the last frames
            // (which may start speech continued in the next buffer).
            let consumed = if at_end {
                samples.len()
            } else {
                (frames.saturating_sub(PAD_FRAMES) * FRAME).min(samples.len())
            };
            return (chunks, consumed);
        }
        let first = position.saturating_sub(PAD_FRAMES);
        let limit = first + MAX_CHUNK_FRAMES;
        if limit > frames && !at_end {
            // Not enough audio to know where this chunk ends.
            return (chunks, first * FRAME);
        }
        let limit = limit.min(frames);
        let cut = find_cut(&levels, &is_speech, position, limit, frames);
        // Trim the silence at the end of the chunk, keeping a little.
        let mut last_speech = cut;
        while last_speech > position && !is_speech(last_speech - 1) {
            last_speech -= 1;
        }
        let end = (last_speech + PAD_FRAMES).min(cut);
        let sample_range = first * FRAME..(end * FRAME).min(samples.len());
        chunks.push(Chunk {
            start_sample: origin + sample_range.start as u64,
            samples: samples[sample_range].to_vec(),
        });
        position = cut;
    }
}

/// Where to end a chunk that starts at `start` and may not go past `limit`: at the first long
/// silence, else at the quietest place in its second half, else at `limit`.
fn find_cut(
    levels: &[f32],
    is_speech: &impl Fn(usize) -> bool,
    start: usize,
    limit: usize,
    frames: usize,
) -> usize {
    let mut silent_run = 0;
    for frame in start..limit {
        if is_speech(frame) {
            silent_run = 0;
        } else {
            silent_run += 1;
            if silent_run >= SILENCE_END_FRAMES {
                return frame + 1;
            }
        }
    }
    if limit >= frames {
        return frames;
    }
    let search_from = (start + MIN_CHUNK_FRAMES).min(limit.saturating_sub(1));
    let smoothed = |frame: usize| {
        let lo = frame.saturating_sub(SMOOTH_FRAMES / 2);
        let hi = (frame + SMOOTH_FRAMES / 2 + 1).min(levels.len());
        levels[lo..hi].iter().sum::<f32>() / (hi - lo) as f32
    };
    (search_from..limit)
        .min_by(|a, b| smoothed(*a).total_cmp(&smoothed(*b)))
        .map_or(limit, |quietest| quietest.max(start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 16_000;

    /// A 200 Hz tone at `amplitude` for `seconds`.
    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * RATE as f64) as usize)
            .map(|i| amplitude * (i as f32 * 200.0 * std::f32::consts::TAU / RATE as f32).sin())
            .collect()
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * RATE as f64) as usize]
    }

    #[test]
    fn long_silences_are_dropped_and_chunks_start_at_the_speech() {
        let mut audio = silence(60.0);
        audio.extend(tone(5.0, 0.3));
        audio.extend(silence(120.0));
        audio.extend(tone(4.0, 0.3));
        let (chunks, consumed) = split(&audio, 1000, true);
        assert_eq!(consumed, audio.len());
        assert_eq!(
            chunks.len(),
            2,
            "{:?}",
            chunks.iter().map(|c| c.start_sample).collect::<Vec<_>>()
        );
        let start_s = |chunk: &Chunk| (chunk.start_sample - 1000) as f64 / RATE as f64;
        assert!(
            (start_s(&chunks[0]) - 60.0).abs() < 0.3,
            "{}",
            start_s(&chunks[0])
        );
        assert!(
            (start_s(&chunks[1]) - 185.0).abs() < 0.3,
            "{}",
            start_s(&chunks[1])
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.samples.len() <= MAX_CHUNK_FRAMES * FRAME)
        );
        let total: usize = chunks.iter().map(|c| c.samples.len()).sum();
        assert!(
            total < 11 * RATE,
            "silence was transcribed: {total} samples"
        );
    }

    #[test]
    fn continuous_speech_is_cut_at_the_quietest_place_within_thirty_seconds() {
        // 50 s of "speech" with a short, quieter gap at 24 s.
        let mut audio = tone(24.0, 0.3);
        audio.extend(tone(0.3, 0.01));
        audio.extend(tone(25.7, 0.3));
        let (chunks, _) = split(&audio, 0, true);
        assert!(chunks.len() >= 2);
        let first_end = chunks[0].samples.len() as f64 / RATE as f64;
        assert!((24.0..=24.4).contains(&first_end), "cut at {first_end}");
        assert!(
            chunks
                .iter()
                .all(|c| c.samples.len() <= MAX_CHUNK_FRAMES * FRAME)
        );
    }

    #[test]
    fn a_chunk_that_may_continue_is_left_for_the_next_buffer() {
        let audio = tone(10.0, 0.3);
        let (chunks, consumed) = split(&audio, 0, false);
        assert!(chunks.is_empty());
        assert_eq!(consumed, 0);
    }
}
