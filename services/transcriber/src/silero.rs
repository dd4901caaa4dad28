//! Silero VAD: the probability that each 32 ms frame of 16 kHz audio is speech, from Silero's
//! ONNX model (v6, the weights faster-whisper runs) on Microsoft's ONNX Runtime, loaded at run
//! time from the library that `scripts/fetch-ct2.sh` fetches. The model is a small LSTM: each
//! frame is read with the last 64 samples of the one before, and its state carries on, so a
//! [`SileroStream`] follows one recording from its start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorRef};

/// Samples per frame at 16 kHz: one probability each (32 ms).
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the frame before that the model reads with each frame.
const CONTEXT_SAMPLES: usize = 64;
/// The LSTM's state: h and c, 128 values each.
const STATE_VALUES: usize = 2 * 128;

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("cannot load the ONNX Runtime library: {0}")]
    Library(String),
    #[error("cannot load the VAD model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("the VAD model failed: {0}")]
    Run(#[from] ort::Error),
}

/// The ONNX Runtime environment: one per process (ONNX Runtime allows no second one), made from
/// the first library path asked for.
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

fn environment(library: &Path) -> Result<&'static Environment, VadError> {
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let built = ort::init_from(library)
        .map_err(|err| VadError::Library(err.to_string()))?
        .with_name("jetscribe-vad")
        .with_telemetry(false)
        .build()
        .map_err(|err| VadError::Library(err.to_string()))?;
    // A racing thread may have set it first: then its environment is the one.
    Ok(ENVIRONMENT.get_or_init(|| built))
}

fn session(environment: &Environment, model: &Path) -> ort::Result<Session> {
    Session::builder(environment)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .commit_from_file(model)
}

/// The loaded model, shared by the streams of every job of a process.
#[derive(Clone)]
pub struct SileroModel {
    /// `run` needs the session to itself; a frame takes about 0.1 ms, so jobs share it.
    session: Arc<Mutex<Session>>,
}

impl std::fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SileroModel")
    }
}

impl SileroModel {
    /// Loads `model` (silero_vad.onnx) with the ONNX Runtime library at `library`; one thread,
    /// as faster-whisper runs it (the model is too small to gain from more).
    pub fn load(library: &Path, model: &Path) -> Result<Self, VadError> {
        let environment = environment(library)?;
        let model_error = |message: String| VadError::Model {
            path: model.to_owned(),
            message,
        };
        let session = session(environment, model).map_err(|err| model_error(err.to_string()))?;
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
        })
    }

    /// A stream of probabilities for one recording, from its first sample.
    pub fn stream(&self) -> SileroStream {
        SileroStream {
            model: self.clone(),
            input: vec![0.0; CONTEXT_SAMPLES + FRAME_SAMPLES],
            state: vec![0.0; STATE_VALUES],
        }
    }
}

/// The model following one recording: the frame before and the LSTM's state.
#[derive(Debug)]
pub struct SileroStream {
    model: SileroModel,
    /// The model's input: the last 64 samples of the frame before, then the frame.
    input: Vec<f32>,
    state: Vec<f32>,
}

impl SileroStream {
    /// The speech probability of each whole frame of `frames` (a multiple of 512 samples; a
    /// partial frame at the end is ignored).
    pub fn probabilities(&mut self, frames: &[f32]) -> Result<Vec<f32>, VadError> {
        let sample_rate = Tensor::from_array(((), vec![16_000i64]))?;
        let mut session = self
            .model
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut probabilities = Vec::with_capacity(frames.len() / FRAME_SAMPLES);
        for frame in frames.chunks_exact(FRAME_SAMPLES) {
            self.input.copy_within(FRAME_SAMPLES.., 0);
            self.input[CONTEXT_SAMPLES..].copy_from_slice(frame);
            let outputs = session.run(ort::inputs! {
                "input" => TensorRef::from_array_view(([1usize, CONTEXT_SAMPLES + FRAME_SAMPLES], &self.input[..]))?,
                "state" => TensorRef::from_array_view(([2usize, 1, 128], &self.state[..]))?,
                "sr" => &sample_rate,
            })?;
            let (_, probability) = outputs["output"].try_extract_tensor::<f32>()?;
            probabilities.push(probability.first().copied().unwrap_or(0.0));
            let (_, state) = outputs["stateN"].try_extract_tensor::<f32>()?;
            self.state.copy_from_slice(state);
        }
        Ok(probabilities)
    }
}
