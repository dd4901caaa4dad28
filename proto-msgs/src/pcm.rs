//! The audio between the decoder and the transcriber: 16 kHz mono signed 16-bit little-endian
//! PCM, raw (no header), in the blob `jobs/<job_id>/audio.s16le`.

/// Samples per second.
pub const SAMPLE_RATE: u32 = 16_000;
/// Channels: mono.
pub const CHANNELS: u32 = 1;
/// Bytes per sample (s16le, mono).
pub const BYTES_PER_SAMPLE: u64 = 2;
/// ffmpeg's name of the sample format (`-f s16le`).
pub const FFMPEG_FORMAT: &str = "s16le";

/// Seconds of audio in `bytes` of PCM.
pub fn seconds_in_bytes(bytes: u64) -> f64 {
    bytes as f64 / BYTES_PER_SAMPLE as f64 / f64::from(SAMPLE_RATE)
}

/// Seconds from the start of the audio to sample `sample`.
pub fn sample_to_seconds(sample: u64) -> f64 {
    sample as f64 / f64::from(SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_and_sample_counts_convert_to_seconds() {
        assert_eq!(seconds_in_bytes(64_000), 2.0);
        assert_eq!(sample_to_seconds(8_000), 0.5);
    }
}
