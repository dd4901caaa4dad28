//! Our voice activity detection against the reference: faster-whisper's `get_speech_timestamps`
//! (installed by `make pytools` into `vendor/python` without its dependencies, loaded by file,
//! running its own copy of the Silero model on the `onnxruntime` Python package), on the same
//! samples and with the same options. Same weights, same algorithm: the same chunks, to the
//! sample.

mod reference;

use std::process::Command;

use jetscribe_transcriber::silero::SileroModel;
use jetscribe_transcriber::vad::{SpeechCutter, VadOptions};
use reference::{repo_root, run_on_samples};

/// Reads f32 samples from argv[1]; prints faster-whisper's speech chunks (30 s at most, as its
/// batched pipeline asks for) as JSON.
const REFERENCE: &str = r#"
import importlib.util, json, pathlib, sys, sysconfig, types
import numpy as np
package = pathlib.Path(sysconfig.get_paths()["purelib"]) / "faster_whisper"
# vad.py imports one function from faster_whisper.utils (which needs the whole package).
utils = types.ModuleType("faster_whisper.utils")
utils.get_assets_path = lambda: str(package / "assets")
sys.modules["faster_whisper.utils"] = utils
spec = importlib.util.spec_from_file_location("vad", package / "vad.py")
vad = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vad)
samples = np.fromfile(sys.argv[1], dtype=np.float32)
options = vad.VadOptions(max_speech_duration_s=30, min_silence_duration_ms=int(sys.argv[2]))
print(json.dumps(vad.get_speech_timestamps(samples, options)))
"#;

/// faster-whisper's chunks of `samples`, as (start, end) in samples.
fn reference_chunks(samples: &[f32], min_silence_ms: u64) -> Vec<(u64, u64)> {
    let (stdout, folder) = run_on_samples("vad", REFERENCE, samples, |input, _| {
        vec![input.display().to_string(), min_silence_ms.to_string()]
    });
    std::fs::remove_dir_all(&folder).ok();
    let chunks: Vec<serde_json::Value> = serde_json::from_slice(&stdout).expect("chunks");
    chunks
        .iter()
        .map(|chunk| {
            let at = |key: &str| chunk[key].as_u64().expect("a sample index");
            (at("start"), at("end"))
        })
        .collect()
}

/// The samples of a fixture, decoded to 16 kHz mono by ffmpeg.
fn clip(name: &str) -> Vec<f32> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(repo_root().join("tests/fixtures").join(name))
        .args(["-f", "f32le", "-ac", "1", "-ar", "16000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success(), "ffmpeg decodes {name}");
    output
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Speech with pauses of every length: short ones inside the clips, 0.3 to 6 s between them,
/// a minute of continuous speech (cut to fit windows) and quiet noise.
fn assembly() -> Vec<f32> {
    let silence = |seconds: f64| vec![0.0f32; (seconds * 16_000.0) as usize];
    let mut state = 0x2545_f491_u32;
    let mut noise = |seconds: f64| -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                0.01 * (state as f32 / u32::MAX as f32 - 0.5)
            })
            .collect()
    };
    [
        silence(1.3),
        clip("jfk.flac"),
        silence(0.3),
        clip("librispeech.wav"),
        noise(6.0),
        clip("quilter.wav"),
        silence(2.5),
        clip("french.wav"),
        silence(1.0),
        clip("voxpopuli.ogg"),
        noise(3.0),
    ]
    .concat()
}

/// Our chunks of `samples`, fed in reads of `read` samples, as (start, end) in samples.
fn our_chunks(samples: &[f32], read: usize, min_silence_ms: u64) -> Vec<(u64, u64)> {
    let root = repo_root();
    let model = SileroModel::load(
        &root.join("vendor/onnxruntime/lib/libonnxruntime.so.1.31.1"),
        &root.join("models/silero-vad/silero_vad.onnx"),
    )
    .expect("the VAD loads (run `make ct2 models`)");
    let mut cutter = SpeechCutter::new(
        model.stream(),
        VadOptions::faster_whisper(min_silence_ms),
        0,
    );
    let mut chunks = Vec::new();
    for piece in samples.chunks(read) {
        chunks.extend(cutter.push(piece).expect("the VAD runs"));
    }
    chunks.extend(cutter.finish().expect("the VAD runs"));
    chunks
        .iter()
        .map(|chunk| {
            let start = chunk.start_sample;
            (start, start + chunk.samples.len() as u64)
        })
        .collect()
}

#[test]
fn speech_chunks_match_faster_whispers_vad_to_the_sample() {
    let samples = assembly();
    for min_silence_ms in [2000, 160] {
        let reference = reference_chunks(&samples, min_silence_ms);
        let ours = our_chunks(&samples, 20_000, min_silence_ms);
        eprintln!("min silence {min_silence_ms} ms: {} chunks", ours.len());
        assert!(reference.len() >= 4, "{reference:?}");
        assert_eq!(ours, reference, "min silence {min_silence_ms} ms");
    }
}
