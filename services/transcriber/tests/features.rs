//! Our log-mel features against the reference: faster-whisper's `FeatureExtractor` (installed
//! by `make pytools` into `vendor/python`, without its dependencies, and loaded by file so that
//! only numpy is needed), run on the same samples.

mod reference;

use jetscribe_transcriber::features::{FeatureExtractor, N_FRAMES, N_MELS};
use reference::run_on_samples;

/// Reads f32 samples from argv[1], writes the reference features to argv[2], prints the shape.
const REFERENCE: &str = r#"
import importlib.util, json, pathlib, sys, sysconfig
import numpy as np
path = pathlib.Path(sysconfig.get_paths()["purelib"]) / "faster_whisper" / "feature_extractor.py"
spec = importlib.util.spec_from_file_location("feature_extractor", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
samples = np.fromfile(sys.argv[1], dtype=np.float32)
features = module.FeatureExtractor(feature_size=80)(samples).astype(np.float32)
features.tofile(sys.argv[2])
print(json.dumps(list(features.shape)))
"#;

/// faster-whisper's features of `samples`: (values, mels, frames).
fn reference_features(samples: &[f32]) -> (Vec<f32>, usize, usize) {
    let (stdout, folder) = run_on_samples("features", REFERENCE, samples, |input, folder| {
        let output = folder.join("features.f32");
        vec![input.display().to_string(), output.display().to_string()]
    });
    let shape: Vec<usize> = serde_json::from_slice(&stdout).expect("the shape");
    let values = std::fs::read(folder.join("features.f32"))
        .expect("features written")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    std::fs::remove_dir_all(&folder).ok();
    (values, shape[0], shape[1])
}

/// 7.3 s (not a whole number of hops) of something speech-like: a gliding harmonic tone whose
/// loudness swells and fades, pseudo-random noise, and a stretch of near-silence.
fn test_signal() -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as f32 / u32::MAX as f32 - 0.5
    };
    (0..116_803)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let pitch = 120.0 + 60.0 * (t * 0.7).sin();
            let voice: f32 = (1..8)
                .map(|h| (t * pitch * h as f32 * std::f32::consts::TAU).sin() / h as f32)
                .sum();
            let loudness = if (3.0..4.0).contains(&t) {
                0.0005
            } else {
                0.2 * (0.6 + 0.4 * (t * 2.1).sin())
            };
            loudness * voice + 0.01 * noise()
        })
        .collect()
}

#[test]
fn log_mel_features_match_faster_whispers_feature_extractor() {
    let samples = test_signal();
    let (reference, mels, frames) = reference_features(&samples);
    let extractor = FeatureExtractor::new();
    let (ours, our_frames) = extractor.features(&samples);
    assert_eq!((mels, frames), (N_MELS, our_frames), "shape");
    let worst = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("largest difference from faster-whisper's features: {worst:e}");
    // float32 arithmetic on both sides: far below what the model can tell apart.
    assert!(worst < 2e-3, "largest difference {worst}");

    // A window: the frames faster-whisper feeds the model (all but the last: its
    // `content_frames`), then zeros (`pad_or_trim`).
    let window = extractor.window(&samples);
    assert_eq!(window.len(), N_MELS * N_FRAMES);
    let fed = frames - 1;
    for mel in [0, 40, 79] {
        let row = &window[mel * N_FRAMES..(mel + 1) * N_FRAMES];
        let expected = &reference[mel * frames..mel * frames + fed];
        assert!(
            row[..fed]
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 2e-3)
        );
        assert!(row[fed..].iter().all(|v| *v == 0.0));
    }
}
