//! ffmpeg itself, on a blocking thread (ffmpeg-sidecar's event iterator blocks): the probed
//! audio stream of the upload, through the demuxer ffprobe chose and only local files, to
//! [`proto_msgs::pcm`] on a pipe, at most MAX_DURATION of it.

use std::path::Path;
use std::time::Duration;

use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use proto_msgs::pcm;
use tokio::sync::mpsc;
use tracing::warn;

use crate::probe::{ALLOWED_FORMATS, Probe};

/// What the blocking ffmpeg thread reports to the async side.
pub enum FfmpegReport {
    Duration(f64),
    Progress(f64),
    Pcm(Vec<u8>),
}

/// How ffmpeg ended.
pub struct FfmpegEnd {
    pub success: bool,
    pub last_error: Option<String>,
}

/// Runs ffmpeg on `media` and sends PCM chunks and timing to `reports`: `channels` of it,
/// interleaved (1: the channels mixed down). The channel is bounded, so a slow store slows
/// ffmpeg instead of filling memory. The output stops after `max_length` of audio, whatever the
/// container's header said.
pub fn run_ffmpeg(
    ffmpeg: &Path,
    media: &Path,
    probe: &Probe,
    channels: u16,
    max_length: Duration,
    reports: mpsc::Sender<FfmpegReport>,
) -> std::io::Result<FfmpegEnd> {
    let mut child = command(ffmpeg, media, probe, channels, max_length).spawn()?;
    let mut end = FfmpegEnd {
        success: false,
        last_error: None,
    };
    let events = child
        .iter()
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    for event in events {
        if let FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) = &event {
            end.last_error = Some(clean_ffmpeg_line(line));
        }
        if let Some(report) = report_of(event)
            && reports.blocking_send(report).is_err()
        {
            // The async side is gone (job abandoned): stop ffmpeg.
            if let Err(err) = child.kill() {
                warn!(error = %err, "cannot stop ffmpeg");
            }
            break;
        }
    }
    end.success = child.wait()?.success();
    Ok(end)
}

/// The ffmpeg command line for the probed audio stream of `media`, in `channels` channels.
fn command(
    ffmpeg: &Path,
    media: &Path,
    probe: &Probe,
    channels: u16,
    max_length: Duration,
) -> FfmpegCommand {
    let mut command = FfmpegCommand::new_with_path(ffmpeg);
    command
        .hide_banner()
        // Input options: the demuxer ffprobe chose, nothing but local files.
        .args(["-protocol_whitelist", "file"])
        .args(["-format_whitelist", &ALLOWED_FORMATS.join(",")])
        .args(["-f", &probe.format])
        .input(media)
        // The probed audio stream only: no video, subtitles or data.
        .args(["-map", &format!("0:{}", probe.audio_stream)])
        .args(["-vn", "-sn", "-dn"])
        .args(["-t", &format!("{:.3}", max_length.as_secs_f64())])
        .args(["-ac", &(pcm::CHANNELS * u32::from(channels)).to_string()]);
    // Channels kept apart: in the input's own layout. `-ac` alone remaps a layout that is not
    // ffmpeg's default for that count (quad, 7.1(wide)), mixing two channels into one.
    if let Some(layout) = probe.channel_layout.as_deref().filter(|_| channels > 1) {
        command.args(["-ch_layout", layout]);
    }
    command
        .args(["-ar", &pcm::SAMPLE_RATE.to_string()])
        .args(["-f", pcm::FFMPEG_FORMAT])
        // To a pipe, ffmpeg flushes after every packet by default: 50 writes of 640 bytes per
        // second of audio. Letting it fill its buffer first cuts the decoder's time by a fifth.
        .args(["-flush_packets", "0"])
        .output("pipe:1");
    command
}

/// What an ffmpeg event tells the async side, if anything.
fn report_of(event: FfmpegEvent) -> Option<FfmpegReport> {
    match event {
        FfmpegEvent::OutputChunk(chunk) => Some(FfmpegReport::Pcm(chunk)),
        FfmpegEvent::ParsedDuration(parsed) => Some(FfmpegReport::Duration(parsed.duration)),
        FfmpegEvent::Progress(progress) => parse_clock(&progress.time).map(FfmpegReport::Progress),
        _ => None,
    }
}

/// `HH:MM:SS.ss` → seconds.
fn parse_clock(clock: &str) -> Option<f64> {
    let mut seconds = 0.0;
    for part in clock.split(':') {
        seconds = seconds * 60.0 + part.trim().parse::<f64>().ok()?;
    }
    (seconds >= 0.0).then_some(seconds)
}

/// ffmpeg error lines start with the component (`[in#0 @ 0x55…] `), and with `-loglevel level`
/// the level (`[error] `), and name the staged file: keep the reason only, on one line.
pub fn clean_ffmpeg_line(line: &str) -> String {
    let mut text = line.trim();
    while let Some(rest) = text.strip_prefix('[') {
        match rest.find("] ") {
            Some(end) => text = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    let text = match text.rfind(": ") {
        Some(index) if text[..index].contains('/') => &text[index + 2..],
        _ => text,
    };
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_clock_parses_to_seconds() {
        assert_eq!(parse_clock("00:01:02.50"), Some(62.5));
        assert_eq!(parse_clock("N/A"), None);
    }

    #[test]
    fn ffmpeg_error_lines_lose_their_prefix_and_path() {
        let cases = [
            (
                "[in#0 @ 0x5555] /tmp/x/input: Invalid data found when processing input",
                "Invalid data found when processing input",
            ),
            (
                "[mov @ 0x55] [error] moov atom not found",
                "moov atom not found",
            ),
            (
                "Stream map '0:a:0' matches no streams.",
                "Stream map '0:a:0' matches no streams.",
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(clean_ffmpeg_line(line), reason);
        }
    }
}
