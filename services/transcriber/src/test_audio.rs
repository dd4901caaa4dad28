//! For the unit tests: the real Silero model (fetched by `make models`, on the ONNX Runtime
//! library that `make ct2` fetches) and the repository's speech fixtures.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::silero::SileroModel;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The VAD model, loaded once for every test of the process.
pub fn silero() -> SileroModel {
    static MODEL: OnceLock<SileroModel> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let root = repo_root();
            SileroModel::load(
                &root.join("vendor/onnxruntime/lib/libonnxruntime.so.1.31.1"),
                &root.join("models/silero-vad/silero_vad.onnx"),
            )
            .expect("the VAD loads (run `make ct2 models`)")
        })
        .clone()
}

/// The samples of `tests/fixtures/<name>`, a 16 kHz mono 16-bit WAV file with a 44-byte header.
pub fn clip(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(repo_root().join("tests/fixtures").join(name)).expect("fixture");
    assert_eq!(
        &bytes[36..40],
        b"data",
        "{name}: a plain 44-byte WAV header"
    );
    bytes[44..]
        .chunks_exact(2)
        .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0)
        .collect()
}
