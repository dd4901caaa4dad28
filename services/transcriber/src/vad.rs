//! Voice activity detection: Silero's speech probabilities ([`silero`](crate::silero)) turned into
//! chunks of speech of at most 30 s, the way faster-whisper turns them (its
//! `get_speech_timestamps`, same thresholds and padding), but as a stream: audio goes in as it
//! is read, chunks come out as soon as their end is certain, and only the audio that a later chunk
//! may still need is held. One choice is ours: the service cuts speech too long for a window at
//! its longest late pause ([`VadOptions::cut_at_longest_pause`]), not at its last.

use crate::silero::{FRAME_SAMPLES, SileroStream, VadError};

/// Silence kept on each side of the speech of a chunk (faster-whisper's `speech_pad_ms`, 400 ms):
/// Whisper needs the onset, and the last syllable trails off.
pub const PAD_SAMPLES: usize = 6_400;
/// Whisper's window: a chunk, padding included, never exceeds it.
const WINDOW_SAMPLES: u64 = 480_000;

/// A piece of speech to transcribe.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Index of the chunk's first sample in the media.
    pub start_sample: u64,
    pub samples: Vec<f32>,
}

/// How probabilities become speech (faster-whisper's `VadOptions`, in samples).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadOptions {
    /// A frame at or above this probability is speech.
    pub threshold: f32,
    /// Below this, a frame is silence (between the two, the state holds).
    pub neg_threshold: f32,
    /// Speech shorter than this is dropped.
    pub min_speech: u64,
    /// Speech is cut before it grows longer than this (the padded chunk still fits a window).
    pub max_speech: u64,
    /// A silence this long ends speech.
    pub min_silence: u64,
    /// Padding on each side.
    pub pad: u64,
    /// Silence at which over-long speech may be cut (faster-whisper's 98 ms).
    pub min_silence_at_max_speech: u64,
    /// Where over-long speech is cut: faster-whisper's last pause, or the longest pause after
    /// this much speech (see [`VadOptions::cut_at_longest_pause`]).
    pub longest_pause_after: Option<u64>,
}

impl VadOptions {
    /// faster-whisper's defaults: threshold 0.5, silence 2 s, padding 400 ms, and speech cut
    /// to fit one 30 s window with its padding (as its batched pipeline does).
    pub fn faster_whisper(min_silence_ms: u64) -> Self {
        let threshold = 0.5;
        let pad = PAD_SAMPLES as u64;
        Self {
            threshold,
            neg_threshold: (threshold - 0.15f32).max(0.01),
            min_speech: 0,
            max_speech: WINDOW_SAMPLES - FRAME_SAMPLES as u64 - 2 * pad,
            // At least a sample: a frame then ends at most one span.
            min_silence: (min_silence_ms * 16).max(1),
            pad,
            min_silence_at_max_speech: 98 * 16,
            longest_pause_after: None,
        }
    }

    /// Over-long speech cut at its longest pause in the last third of the chunk, not at its
    /// last pause: the last pause of 98 ms is often inside a phrase ("since then the | export"),
    /// and the words on each side of a cut are heard without the other, while a long pause is
    /// most often between sentences.
    pub fn cut_at_longest_pause(self) -> Self {
        Self {
            longest_pause_after: Some(self.max_speech * 2 / 3),
            ..self
        }
    }
}

/// Speech from `start` to `end` (samples from the start of the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

/// faster-whisper's `get_speech_timestamps` loop, one frame at a time: probabilities in, speech
/// spans (unpadded) out as soon as each has ended.
#[derive(Debug, Clone)]
pub struct Segmenter {
    options: VadOptions,
    /// Frames seen.
    frames: u64,
    /// Start of the speech under way.
    open: Option<u64>,
    /// Where the silence under way began.
    temp_end: Option<u64>,
    /// The last silence long enough to cut over-long speech at.
    prev_end: Option<u64>,
    /// Where speech resumed after `prev_end`.
    next_start: u64,
    /// The pauses of 98 ms or more in the speech under way that speech resumed after.
    pauses: Vec<Pause>,
}

/// Silence inside speech, from `from` to `to` (samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    from: u64,
    to: u64,
}

impl Segmenter {
    pub fn new(options: VadOptions) -> Self {
        Self {
            options,
            frames: 0,
            open: None,
            temp_end: None,
            prev_end: None,
            next_start: 0,
            pauses: Vec::new(),
        }
    }

    /// The next frame's probability; returns the speech it ends, if any.
    pub fn push(&mut self, probability: f32) -> Option<Span> {
        let options = self.options;
        let at = self.frames * FRAME_SAMPLES as u64;
        self.frames += 1;
        let speech = probability >= options.threshold;
        if speech
            && self.temp_end.take().is_some()
            && let Some(end) = self.prev_end.filter(|end| self.next_start < *end)
        {
            self.next_start = at;
            self.pauses.push(Pause { from: end, to: at });
        }
        let Some(start) = self.open else {
            if speech {
                self.open = Some(at);
            }
            return None;
        };
        let mut ended = None;
        if at - start > options.max_speech {
            ended = Some(self.cut_long_speech(start, at));
        }
        let Some(start) = self.open else {
            return ended;
        };
        if probability >= options.neg_threshold {
            return ended;
        }
        let silence_from = *self.temp_end.get_or_insert(at);
        if at - silence_from > options.min_silence_at_max_speech {
            self.prev_end = Some(silence_from);
        }
        if at - silence_from < options.min_silence {
            return ended;
        }
        // Not after a cut: that reset the silence to start here, shorter than `min_silence`.
        self.reset();
        let span = Span {
            start,
            end: silence_from,
        };
        (span.end - span.start > options.min_speech).then_some(span)
    }

    /// Speech that has grown too long is cut at its last pause of 98 ms or more, or at its
    /// longest late one (see [`VadOptions::longest_pause_after`]), and goes on from where the
    /// speech resumed, if it did; else it is cut here.
    fn cut_long_speech(&mut self, start: u64, at: u64) -> Span {
        if let Some(pause) = self.longest_late_pause(start, at) {
            // The later pauses stay: the speech after this one may be cut at them.
            self.pauses.retain(|later| later.from > pause.from);
            if self.prev_end.is_some_and(|end| end <= pause.from) {
                self.prev_end = None;
                self.next_start = 0;
            }
            self.open = Some(pause.to);
            return Span {
                start,
                end: pause.from,
            };
        }
        self.pauses.clear();
        let span = match self.prev_end {
            Some(end) => {
                self.open = (self.next_start >= end).then_some(self.next_start);
                Span { start, end }
            }
            None => {
                self.open = None;
                Span { start, end: at }
            }
        };
        self.prev_end = None;
        self.next_start = 0;
        self.temp_end = None;
        span
    }

    /// The longest complete pause after `longest_pause_after` samples of the speech from
    /// `start`, when it is longer than the pause under way at `at` (if any): else the cut is
    /// faster-whisper's.
    fn longest_late_pause(&self, start: u64, at: u64) -> Option<Pause> {
        let after = start + self.options.longest_pause_after?;
        let under_way = match self.prev_end {
            Some(end) if self.next_start < end => at - end,
            _ => 0,
        };
        self.pauses
            .iter()
            .filter(|pause| pause.from >= after)
            // Of pauses as long, the last.
            .max_by_key(|pause| pause.to - pause.from)
            .filter(|pause| pause.to - pause.from > under_way)
            .copied()
    }

    fn reset(&mut self) {
        self.open = None;
        self.temp_end = None;
        self.prev_end = None;
        self.next_start = 0;
        self.pauses.clear();
    }

    /// The stream ended after `length` samples: the speech under way ends there.
    pub fn finish(&mut self, length: u64) -> Option<Span> {
        let start = self.open.take()?;
        self.reset();
        (length - start > self.options.min_speech).then_some(Span { start, end: length })
    }

    /// The earliest sample a span not yet returned may start at.
    pub fn earliest_start(&self) -> u64 {
        self.open.unwrap_or(self.frames * FRAME_SAMPLES as u64)
    }
}

/// faster-whisper's padding, as a stream: every span gets `pad` on each side, except that two
/// spans closer than two pads share the silence between them. A span is held until the next
/// one shows whether it is that close, or until no later speech can be.
#[derive(Debug, Clone)]
struct Padder {
    pad: u64,
    /// The last span (its start already padded), its end not yet.
    held: Option<Span>,
    /// Padding never reaches before this: the stream's start, or the end of the span released
    /// before.
    floor: u64,
}

impl Padder {
    fn new(pad: u64) -> Self {
        Self {
            pad,
            held: None,
            floor: 0,
        }
    }

    /// A span has ended; returns the one before it, padded.
    fn push(&mut self, mut span: Span) -> Option<Span> {
        let released = match self.held.take() {
            Some(mut held) => {
                let gap = span.start.saturating_sub(held.end);
                let share = if gap < 2 * self.pad {
                    gap / 2
                } else {
                    self.pad
                };
                held.end += share;
                span.start -= share;
                self.floor = held.end;
                Some(held)
            }
            None => {
                span.start = span.start.saturating_sub(self.pad).max(self.floor);
                None
            }
        };
        self.held = Some(span);
        released
    }

    /// The held span, padded, once no later speech can start closer than two pads to it (no
    /// speech starts before `earliest`).
    fn release_before(&mut self, earliest: u64) -> Option<Span> {
        let held = self.held?;
        if held.end + 2 * self.pad > earliest {
            return None;
        }
        self.held = None;
        let span = Span {
            start: held.start,
            end: held.end + self.pad,
        };
        self.floor = span.end;
        Some(span)
    }

    /// The stream ended after `length` samples: the held span, padded within it.
    fn finish(&mut self, length: u64) -> Option<Span> {
        let held = self.held.take()?;
        Some(Span {
            start: held.start,
            end: (held.end + self.pad).min(length),
        })
    }

    /// The earliest sample a span not yet returned may start at, padding included, when no
    /// speech starts before `earliest`.
    fn keep_from(&self, earliest: u64) -> u64 {
        match self.held {
            Some(held) => held.start,
            None => earliest.saturating_sub(self.pad).max(self.floor),
        }
    }
}

/// Audio in, chunks of speech out, for one recording from media sample `origin` on: Silero's
/// probabilities, the [`Segmenter`] and the padding, holding only the audio that a chunk still to
/// come may need.
#[derive(Debug)]
pub struct SpeechCutter {
    stream: SileroStream,
    segmenter: Segmenter,
    padder: Padder,
    /// Media sample of the stream's first sample.
    origin: u64,
    /// Audio from stream sample `kept_from` on.
    kept: Vec<f32>,
    kept_from: u64,
}

impl SpeechCutter {
    pub fn new(stream: SileroStream, options: VadOptions, origin: u64) -> Self {
        Self {
            stream,
            segmenter: Segmenter::new(options),
            padder: Padder::new(options.pad),
            origin,
            kept: Vec::new(),
            kept_from: 0,
        }
    }

    /// Adds audio; returns the chunks whose end is now certain.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<Chunk>, VadError> {
        self.kept.extend_from_slice(samples);
        let unread = self.unread();
        let whole = unread.len() / FRAME_SAMPLES * FRAME_SAMPLES;
        let frames = unread[..whole].to_vec();
        let mut spans = self.detect(&frames)?;
        spans.extend(self.padder.release_before(self.segmenter.earliest_start()));
        Ok(self.cut(spans))
    }

    /// The audio has ended: returns the chunks left.
    pub fn finish(&mut self) -> Result<Vec<Chunk>, VadError> {
        // As faster-whisper does, the audio is padded with silence to whole frames (a frame
        // more when it is whole already).
        let mut last = self.unread().to_vec();
        last.resize(FRAME_SAMPLES, 0.0);
        let mut spans = self.detect(&last)?;
        let length = self.kept_from + self.kept.len() as u64;
        if let Some(span) = self.segmenter.finish(length) {
            spans.extend(self.padder.push(span));
        }
        spans.extend(self.padder.finish(length));
        let chunks = self.cut(spans);
        // All of it is handed out or silence.
        self.kept.clear();
        self.kept_from = length;
        Ok(chunks)
    }

    /// The media sample from which audio may still become a chunk: everything before it is
    /// handed out or silence.
    pub fn resume_sample(&self) -> u64 {
        self.origin + self.kept_from
    }

    /// Samples kept and not yet read by the model.
    fn unread(&self) -> &[f32] {
        let read = self.segmenter.frames * FRAME_SAMPLES as u64;
        &self.kept[(read - self.kept_from) as usize..]
    }

    /// Runs the model over whole `frames`; returns the padded spans they end.
    fn detect(&mut self, frames: &[f32]) -> Result<Vec<Span>, VadError> {
        let mut spans = Vec::new();
        for probability in self.stream.probabilities(frames)? {
            if let Some(span) = self.segmenter.push(probability) {
                spans.extend(self.padder.push(span));
            }
        }
        Ok(spans)
    }

    fn keep_from(&self) -> u64 {
        self.padder.keep_from(self.segmenter.earliest_start())
    }

    /// The audio of `spans`; then drops what no later chunk needs.
    fn cut(&mut self, spans: Vec<Span>) -> Vec<Chunk> {
        let chunks = spans
            .into_iter()
            .map(|span| {
                let end = span.end.min(span.start + WINDOW_SAMPLES);
                let range = (span.start - self.kept_from) as usize..(end - self.kept_from) as usize;
                Chunk {
                    start_sample: self.origin + span.start,
                    samples: self.kept[range].to_vec(),
                }
            })
            .collect();
        // Never past the audio (the last frame read may be padding).
        let received = self.kept_from + self.kept.len() as u64;
        let keep_from = self.keep_from().clamp(self.kept_from, received);
        self.kept.drain(..(keep_from - self.kept_from) as usize);
        self.kept_from = keep_from;
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_audio;

    const RATE: f64 = 16_000.0;

    /// faster-whisper's options with round numbers: speech from 0.5, silence below 0.35, 1 s
    /// of silence ends speech, speech cut past 3 s, 0.1 s of padding.
    fn options() -> VadOptions {
        VadOptions {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech: 0,
            max_speech: 3 * 16_000,
            min_silence: 16_000,
            pad: 1_600,
            min_silence_at_max_speech: 1_568,
            longest_pause_after: None,
        }
    }

    /// The spans of a run of probabilities, one per 32 ms frame (`s` speech 0.9, `.` silence
    /// 0.1, `~` in between 0.4), in frames.
    fn spans(frames: &str) -> Vec<(u64, u64)> {
        spans_with(options(), frames)
    }

    /// [`spans`] with other options.
    fn spans_with(options: VadOptions, frames: &str) -> Vec<(u64, u64)> {
        let mut segmenter = Segmenter::new(options);
        let mut found = Vec::new();
        for frame in frames.chars() {
            let probability = match frame {
                's' => 0.9,
                '~' => 0.4,
                _ => 0.1,
            };
            found.extend(segmenter.push(probability));
        }
        found.extend(segmenter.finish(frames.len() as u64 * 512));
        found
            .into_iter()
            .map(|span| (span.start / 512, span.end / 512))
            .collect()
    }

    #[test]
    fn speech_starts_above_the_threshold_and_ends_after_a_long_enough_silence() {
        // 1 s is 31.25 frames: a silence of 32 frames ends speech, one of 31 does not.
        let cases: [(String, Vec<(u64, u64)>); 5] = [
            (".".repeat(100), vec![]),
            (
                format!("{}{}", ".".repeat(10), "s".repeat(20)),
                vec![(10, 30)],
            ),
            (
                format!("{}{}{}", "s".repeat(10), ".".repeat(33), "s".repeat(5)),
                vec![(0, 10), (43, 48)],
            ),
            (
                format!("{}{}{}", "s".repeat(10), ".".repeat(30), "s".repeat(5)),
                vec![(0, 45)],
            ),
            // Between the thresholds, nothing changes: speech goes on, silence too.
            (
                format!("{}{}{}", "~".repeat(5), "s".repeat(5), "~".repeat(40)),
                vec![(5, 50)],
            ),
        ];
        for (frames, expected) in cases {
            assert_eq!(spans(&frames), expected, "{frames}");
        }
    }

    #[test]
    fn speech_that_grows_too_long_is_cut_at_its_last_pause_else_where_it_is() {
        // 3 s is 93.75 frames: speech is cut at the frame past it.
        let pause = format!("{}{}{}", "s".repeat(50), ".".repeat(10), "s".repeat(60));
        assert_eq!(spans(&pause), vec![(0, 50), (60, 120)]);
        let unbroken = "s".repeat(200);
        assert_eq!(spans(&unbroken), vec![(0, 94), (95, 189), (190, 200)]);
        // A pause under 98 ms (3 frames) is no place to cut.
        let short = format!("{}{}{}", "s".repeat(50), ".".repeat(3), "s".repeat(60));
        assert_eq!(spans(&short), vec![(0, 94), (95, 113)]);

        // Of several pauses, the last.
        let pauses = [
            "s".repeat(20),
            ".".repeat(8),
            "s".repeat(20),
            ".".repeat(5),
            "s".repeat(20),
            ".".repeat(8),
            "s".repeat(40),
        ]
        .concat();
        assert_eq!(spans(&pauses), vec![(0, 73), (81, 121)]);
    }

    #[test]
    fn speech_that_grows_too_long_can_be_cut_at_its_longest_pause_in_its_last_third() {
        // 3 s is 93.75 frames, and its last third starts at frame 62.5.
        let longest = options().cut_at_longest_pause();
        let run = |parts: &[(&str, usize)]| -> String {
            parts
                .iter()
                .map(|(frame, count)| frame.repeat(*count))
                .collect()
        };
        // (frames, cut at the last pause, cut at the longest late one)
        let cases = [
            // An early long pause (15 frames), a late one of 8 and a later one of 5.
            (
                run(&[
                    ("s", 20),
                    (".", 15),
                    ("s", 35),
                    (".", 8),
                    ("s", 7),
                    (".", 5),
                ]) + &"s".repeat(60),
                vec![(0, 85), (90, 150)],
                vec![(0, 70), (78, 150)],
            ),
            // The silence under way at the cut (9 frames) is longer than the late pause (5).
            (
                run(&[("s", 70), (".", 5), ("s", 10), (".", 20), ("s", 20)]),
                vec![(0, 85), (105, 125)],
                vec![(0, 85), (105, 125)],
            ),
            // Two late pauses as long: the later.
            (
                run(&[("s", 65), (".", 6), ("s", 10), (".", 6), ("s", 40)]),
                vec![(0, 81), (87, 127)],
                vec![(0, 81), (87, 127)],
            ),
            // No pause: cut where it is.
            (
                "s".repeat(100),
                vec![(0, 94), (95, 100)],
                vec![(0, 94), (95, 100)],
            ),
        ];
        for (frames, at_last, at_longest) in cases {
            assert_eq!(spans(&frames), at_last, "{frames}");
            assert_eq!(spans_with(longest, &frames), at_longest, "{frames}");
        }
    }

    #[test]
    fn padding_surrounds_speech_and_neighbours_share_the_silence_between_them() {
        let pad = 1_600;
        let span = |start, end| Span { start, end };
        // (spans as they end, the audio's length, padded spans)
        let cases: [(Vec<Span>, u64, Vec<Span>); 3] = [
            (vec![span(1_000, 10_000)], 20_000, vec![span(0, 11_600)]),
            (
                vec![span(5_000, 10_000), span(10_800, 20_000)],
                20_500,
                vec![span(3_400, 10_400), span(10_400, 20_500)],
            ),
            (
                vec![span(5_000, 10_000), span(30_000, 40_000)],
                50_000,
                vec![span(3_400, 11_600), span(28_400, 41_600)],
            ),
        ];
        for (ended, length, expected) in cases {
            let mut padder = Padder::new(pad);
            let mut padded: Vec<Span> = Vec::new();
            for span in ended {
                padded.extend(padder.push(span));
            }
            padded.extend(padder.finish(length));
            assert_eq!(padded, expected);
        }
        // A span is released as soon as no later speech can come within two pads of it.
        let mut padder = Padder::new(pad);
        assert_eq!(padder.push(span(5_000, 10_000)), None);
        assert_eq!(padder.release_before(13_199), None);
        assert_eq!(padder.release_before(13_200), Some(span(3_400, 11_600)));
        assert_eq!(padder.keep_from(20_000), 18_400);
    }

    /// Runs the cutter over `audio` in reads of `read` samples; returns the chunks as (start,
    /// length) in samples, and the resume point after each read.
    fn cut(audio: &[f32], read: usize, origin: u64) -> (Vec<(u64, usize)>, Vec<u64>) {
        cut_with(VadOptions::faster_whisper(2000), audio, read, origin)
    }

    /// [`cut`] with other options.
    fn cut_with(
        options: VadOptions,
        audio: &[f32],
        read: usize,
        origin: u64,
    ) -> (Vec<(u64, usize)>, Vec<u64>) {
        let mut cutter = SpeechCutter::new(test_audio::silero().stream(), options, origin);
        let (mut chunks, mut resumes) = (Vec::new(), Vec::new());
        for piece in audio.chunks(read) {
            chunks.extend(cutter.push(piece).expect("the VAD runs"));
            resumes.push(cutter.resume_sample());
        }
        chunks.extend(cutter.finish().expect("the VAD runs"));
        resumes.push(cutter.resume_sample());
        let chunks = chunks
            .into_iter()
            .map(|chunk| {
                let start = (chunk.start_sample - origin) as usize;
                assert_eq!(chunk.samples, audio[start..start + chunk.samples.len()]);
                (chunk.start_sample, chunk.samples.len())
            })
            .collect();
        (chunks, resumes)
    }

    #[test]
    fn speech_between_long_silences_comes_out_padded_whatever_the_reads() {
        let speech = test_audio::clip("librispeech.wav");
        let silence = |seconds: f64| vec![0.0f32; (seconds * RATE) as usize];
        let audio = [silence(60.0), speech.clone(), silence(30.0), speech.clone()].concat();
        let mut results = Vec::new();
        for read in [512, 7_777, 100_000, audio.len()] {
            let (chunks, resumes) = cut(&audio, read, 1_000);
            assert!(
                resumes.windows(2).all(|pair| pair[0] <= pair[1]),
                "{resumes:?}"
            );
            assert_eq!(resumes.last(), Some(&(1_000 + audio.len() as u64)));
            results.push(chunks);
        }
        assert!(
            results.windows(2).all(|pair| pair[0] == pair[1]),
            "{results:?}"
        );
        let chunks = &results[0];
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let clip_s = speech.len() as f64 / RATE;
        for (chunk, clip_start) in chunks.iter().zip([60.0, 90.0 + clip_s]) {
            let start = (chunk.0 - 1_000) as f64 / RATE;
            let length = chunk.1 as f64 / RATE;
            // The clip's speech starts within its first 0.5 s and the padding is 0.4 s.
            assert!(
                (clip_start - 0.4..clip_start + 0.5).contains(&start),
                "{start}"
            );
            assert!((clip_s - 0.5..clip_s + 1.0).contains(&length), "{length}");
        }
    }

    #[test]
    fn continuous_speech_comes_out_in_chunks_that_fit_a_window() {
        let speech = test_audio::clip("librispeech.wav");
        let audio = speech.repeat(8);
        let options = VadOptions::faster_whisper(2000);
        for options in [options, options.cut_at_longest_pause()] {
            let (chunks, _) = cut_with(options, &audio, 48_000, 0);
            assert!(chunks.len() >= 3, "{chunks:?}");
            assert!(chunks.iter().all(|(_, len)| *len as u64 <= WINDOW_SAMPLES));
            // Chunks follow one another, and together they hold all of the speech: nothing is
            // lost at the cuts.
            assert!(
                chunks
                    .windows(2)
                    .all(|pair| pair[0].0 + pair[0].1 as u64 <= pair[1].0)
            );
            let covered: usize = chunks.iter().map(|(_, len)| len).sum();
            assert!(covered as f64 > audio.len() as f64 * 0.9, "{chunks:?}");
        }
    }

    #[test]
    fn silence_and_steady_noise_give_no_chunk() {
        let mut state = 0x2545_f491_u32;
        let noise: Vec<f32> = (0..30 * 16_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                0.1 * (state as f32 / u32::MAX as f32 - 0.5)
            })
            .collect();
        let audio = [vec![0.0; 30 * 16_000], noise].concat();
        let (chunks, resumes) = cut(&audio, 16_000, 0);
        assert_eq!(chunks, vec![]);
        assert_eq!(resumes.last(), Some(&(audio.len() as u64)));
    }
}
