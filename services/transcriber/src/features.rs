//! Whisper's input: log-mel features computed as the reference extractors compute them
//! (openai-whisper's `log_mel_spectrogram`, faster-whisper's `FeatureExtractor`): the audio
//! padded with one hop of zeros, a centred STFT (reflect padding, periodic Hann window of 400
//! samples, hop 160), the power spectrum through Whisper's 80 mel filters, `log10`, everything
//! raised to at least 8 below the loudest value **of the whole window**, then `(x + 4) / 4`. A
//! window shorter than 30 s is padded with zero features after its `samples / 160` frames, as
//! faster-whisper pads it.
//!
//! `tests/features.rs` compares this with faster-whisper's extractor run in Python.

use std::sync::Arc;

use mel_spec::mel::mel;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Whisper's input rate.
pub const SAMPLE_RATE: usize = proto_msgs::pcm::SAMPLE_RATE as usize;
/// Whisper's fixed window: 30 s.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
pub const N_MELS: usize = 80;
/// Feature frames in a window.
pub const N_FRAMES: usize = WINDOW_SAMPLES / HOP_LENGTH;
/// Frequency bins of the one-sided spectrum.
const N_BINS: usize = N_FFT / 2 + 1;

/// One mel filter: its first non-zero bin and its weights from there (the filters are sparse).
#[derive(Debug, Clone)]
struct MelFilter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Computes Whisper's features; cheap to share between threads.
pub struct FeatureExtractor {
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    filters: Vec<MelFilter>,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor").finish_non_exhaustive()
    }
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureExtractor {
    pub fn new() -> Self {
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        // Periodic Hann window (`np.hanning(n + 1)[:-1]`, `torch.hann_window(n)`).
        let window = (0..N_FFT)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        // Slaney-scale filters with Slaney normalisation, as librosa and Whisper build them.
        let dense = mel(SAMPLE_RATE as f64, N_FFT, N_MELS, None, None, false, true);
        let filters = dense
            .rows()
            .into_iter()
            .map(|row| {
                let first_bin = row.iter().position(|w| *w != 0.0).unwrap_or(0);
                let last_bin = row.iter().rposition(|w| *w != 0.0).unwrap_or(0);
                MelFilter {
                    first_bin,
                    weights: row
                        .iter()
                        .skip(first_bin)
                        .take(last_bin + 1 - first_bin)
                        .map(|w| *w as f32)
                        .collect(),
                }
            })
            .collect();
        Self {
            fft,
            window,
            filters,
        }
    }

    /// The features of `samples` (any length): `N_MELS` rows of `samples.len() / 160 + 1`
    /// frames, row-major, normalised over all of them.
    pub fn features(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let frames = samples.len() / HOP_LENGTH + 1;
        let padded = centred(samples);
        let mut log_mel = vec![0f32; N_MELS * frames];
        let mut buffer = vec![Complex::new(0f32, 0f32); N_FFT];
        let mut scratch = vec![Complex::new(0f32, 0f32); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f32; N_BINS];
        for frame in 0..frames {
            let start = frame * HOP_LENGTH;
            for (slot, (sample, weight)) in buffer
                .iter_mut()
                .zip(padded[start..start + N_FFT].iter().zip(&self.window))
            {
                *slot = Complex::new(sample * weight, 0.0);
            }
            self.fft.process_with_scratch(&mut buffer, &mut scratch);
            for (bin, value) in power.iter_mut().zip(&buffer) {
                *bin = value.norm_sqr();
            }
            for (mel_index, filter) in self.filters.iter().enumerate() {
                let energy: f32 = filter
                    .weights
                    .iter()
                    .zip(&power[filter.first_bin..])
                    .map(|(w, p)| w * p)
                    .sum();
                log_mel[mel_index * frames + frame] = energy.max(1e-10).log10();
            }
        }
        let floor = log_mel.iter().copied().fold(f32::NEG_INFINITY, f32::max) - 8.0;
        for value in &mut log_mel {
            *value = (value.max(floor) + 4.0) / 4.0;
        }
        (log_mel, frames)
    }

    /// The features of one window of at most 30 s: `N_MELS` × `N_FRAMES`, row-major, zeros past
    /// the audio. The last frame (centred on the padding after the audio) is left out, as
    /// faster-whisper and openai-whisper leave it out: `samples.len() / 160` frames are kept.
    pub fn window(&self, samples: &[f32]) -> Vec<f32> {
        let samples = &samples[..samples.len().min(WINDOW_SAMPLES)];
        let (features, frames) = self.features(samples);
        let kept = (samples.len() / HOP_LENGTH).min(N_FRAMES);
        let mut window = vec![0f32; N_MELS * N_FRAMES];
        for mel_index in 0..N_MELS {
            window[mel_index * N_FRAMES..mel_index * N_FRAMES + kept]
                .copy_from_slice(&features[mel_index * frames..mel_index * frames + kept]);
        }
        window
    }
}

/// `samples` followed by one hop of zeros (the extractors' `padding`), then reflect-padded by
/// half an FFT on each side (`center=True`, `pad_mode="reflect"`).
fn centred(samples: &[f32]) -> Vec<f32> {
    let mut signal = samples.to_vec();
    signal.resize(samples.len() + HOP_LENGTH, 0.0);
    let half = N_FFT / 2;
    // Reflection needs more samples than the pad; a shorter signal is extended with silence.
    if signal.len() <= half {
        signal.resize(half + 1, 0.0);
    }
    let n = signal.len();
    let mut padded = Vec::with_capacity(n + 2 * half);
    padded.extend((1..=half).rev().map(|i| signal[i]));
    padded.extend_from_slice(&signal);
    padded.extend((0..half).map(|j| signal[n - 2 - j]));
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_mirrors_the_signal_without_repeating_the_edge() {
        let samples: Vec<f32> = (0..400).map(|i| i as f32).collect();
        let padded = centred(&samples);
        assert_eq!(padded.len(), 400 + HOP_LENGTH + N_FFT);
        assert_eq!(&padded[..3], &[200.0, 199.0, 198.0]);
        assert_eq!(padded[199], 1.0);
        assert_eq!(padded[200], 0.0);
        // The end: the hop of zeros, then the signal mirrored back into the samples.
        let end = 200 + 400 + HOP_LENGTH;
        assert!(padded[400 + 200..end + 159].iter().all(|v| *v == 0.0));
        assert_eq!(padded[padded.len() - 1], 359.0);
        assert_eq!(padded.len() - 2 * (N_FFT / 2) - HOP_LENGTH, samples.len());
    }

    #[test]
    fn a_window_has_the_frames_of_its_audio_then_zeros() {
        let extractor = FeatureExtractor::new();
        let tone: Vec<f32> = (0..16_000)
            .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
            .collect();
        let (features, frames) = extractor.features(&tone);
        assert_eq!(frames, 101);
        let max = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = features.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(
            (max - min - 2.0).abs() < 1e-4,
            "the floor is 8 below the peak"
        );
        let window = extractor.window(&tone);
        assert_eq!(window.len(), N_MELS * N_FRAMES);
        assert_eq!(window[N_FRAMES - 1], 0.0);
        assert_eq!(window[99], features[99]);
        assert_eq!(window[100], 0.0, "the frame after the audio is left out");
        // Silence alone: every value is the floor.
        let (silent, _) = extractor.features(&[0.0; 800]);
        assert!(silent.iter().all(|v| (*v - silent[0]).abs() < 1e-6));
    }
}
