//! Media made in the tests by the real ffmpeg, and raw PCM.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sample rate of [`decode`]'s output and [`write_wav`]'s input.
pub const SAMPLE_RATE: usize = 16_000;

/// Runs ffmpeg with `args` (inputs and options) writing `output` in `dir`.
pub fn ffmpeg(dir: &Path, output: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(output);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make {output}");
    path
}

/// Joins two mono files into one stereo `output` in `dir` (left, right), its codec chosen by
/// the extension.
pub fn stereo(dir: &Path, left: &Path, right: &Path, output: &str) -> PathBuf {
    let args = [
        "-i",
        left.to_str().expect("a UTF-8 path"),
        "-i",
        right.to_str().expect("a UTF-8 path"),
        "-filter_complex",
        "[0:a][1:a]join=inputs=2:channel_layout=stereo",
    ];
    ffmpeg(dir, output, &args)
}

/// A file of speech clips at a steady pace, and what it says.
pub struct SpeechFile {
    /// How many clips it holds.
    pub clips: usize,
    /// What is said in it, clip after clip.
    pub reference: String,
}

/// Writes `total_s` seconds of 16 kHz WAV to `path`: a speech clip every `every_s` seconds,
/// silence between. The clips take turns (JFK, an audiobook, another audiobook): the same
/// words over and over are not speech a service meets, and packed into one window they would
/// trip Whisper's repetition check (a compression ratio above 2.4), which decodes again at
/// five higher temperatures.
pub fn speech_every(path: &Path, total_s: usize, every_s: usize) -> SpeechFile {
    let clips = [
        (decode(&crate::fixture("jfk.flac")), crate::JFK_REFERENCE),
        (
            decode(&crate::fixture("librispeech.wav")),
            crate::reference::LIBRISPEECH_REFERENCE,
        ),
        (
            decode(&crate::fixture("quilter.wav")),
            crate::reference::QUILTER_REFERENCE,
        ),
    ];
    let mut samples = vec![0i16; total_s * SAMPLE_RATE];
    let mut said = Vec::new();
    for (turn, start_s) in (0..total_s).step_by(every_s.max(1)).enumerate() {
        let (audio, reference) = &clips[turn % clips.len()];
        let at = start_s * SAMPLE_RATE;
        if at + audio.len() > samples.len() {
            break;
        }
        samples[at..at + audio.len()].copy_from_slice(audio);
        said.push(*reference);
    }
    write_wav(path, &samples);
    SpeechFile {
        clips: said.len(),
        reference: said.join(" "),
    }
}

/// A clip as 16 kHz mono samples, decoded by ffmpeg.
pub fn decode(clip: &Path) -> Vec<i16> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args(["-f", "s16le", "-ac", "1", "-ar", "16000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success());
    output
        .stdout
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// Writes a 16-bit mono WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend(b"RIFF");
    bytes.extend((36 + data_len).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes()); // PCM
    bytes.extend(1u16.to_le_bytes()); // mono
    bytes.extend((SAMPLE_RATE as u32).to_le_bytes());
    bytes.extend((SAMPLE_RATE as u32 * 2).to_le_bytes());
    bytes.extend(2u16.to_le_bytes());
    bytes.extend(16u16.to_le_bytes());
    bytes.extend(b"data");
    bytes.extend(data_len.to_le_bytes());
    for sample in samples {
        bytes.extend(sample.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("wav written");
}
