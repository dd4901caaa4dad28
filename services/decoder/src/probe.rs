//! What is in an upload, found before any decoding: its container format, the audio stream to
//! decode and the duration. An upload is hostile until proven otherwise: ffprobe (and ffmpeg
//! after it) may read local files only (`-protocol_whitelist file`) and only through the
//! demuxers of [`ALLOWED_FORMATS`]: audio and video containers. Playlists and lists (hls, dash,
//! concat), patterns (image2), generators (lavfi), session descriptions (sdp) and the rest, which
//! open other files or URLs named inside the upload, never run.

use std::path::Path;
use std::time::Duration;

use jetscribe_nats::StageError;
use proto_msgs::{Channels, pcm};

use crate::ffmpeg::clean_ffmpeg_line;

/// Demuxers an upload may be read with (ffmpeg's names; `-format_whitelist`).
pub const ALLOWED_FORMATS: &[&str] = &[
    // MP4, M4A, MOV, 3GP; Matroska and WebM; AVI; ASF (WMA, WMV); FLV; MPEG-TS and -PS; MXF;
    // RealMedia; NUT.
    "mov", "matroska", "avi", "asf", "flv", "mpegts", "mpeg", "mxf", "rm", "nut",
    // Audio containers and raw audio streams.
    "ogg", "wav", "w64", "flac", "mp3", "aac", "ac3", "eac3", "dts", "truehd", "amr", "aiff", "caf",
    "au", "wv", "ape", "tta", "mpc", "mpc8", "gsm", "dsf", "voc",
];

/// What ffprobe found in the upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The demuxer ffprobe chose, as ffmpeg is then told to use it (`-f`).
    pub format: String,
    /// Index of the audio stream to decode: the default one, else the first.
    pub audio_stream: u32,
    /// That stream's channels, when ffprobe tells.
    pub channels: Option<u32>,
    /// That stream's channel layout (`stereo`, `quad`, `5.1(side)`), when ffprobe names one.
    pub channel_layout: Option<String>,
    pub duration_s: Option<f64>,
}

#[derive(Debug)]
pub enum ProbeError {
    /// ffprobe could not read the file: not media, or damaged. Its reason, on one line.
    Unreadable(String),
    /// A format that is not an audio or video container (named, when ffprobe told).
    Unsupported(Option<String>),
    NoAudio,
    /// ffprobe did not finish in time (a damaged or hostile file): it was killed.
    TimedOut(Duration),
    /// ffprobe itself could not be run.
    Run(std::io::Error),
}

impl ProbeError {
    /// What the job fails with (`filename` as the client named the upload), or retries on.
    pub fn into_stage_error(self, filename: &str) -> StageError {
        match self {
            ProbeError::Unreadable(reason) => {
                StageError::Permanent(format!("cannot decode {filename}: {reason}"))
            }
            ProbeError::Unsupported(format) => StageError::Permanent(format!(
                "cannot decode {filename}: unsupported format {}",
                format
                    .as_deref()
                    .unwrap_or("(not an audio or video container)")
            )),
            ProbeError::NoAudio => StageError::Permanent(format!("no audio stream in {filename}")),
            ProbeError::TimedOut(limit) => StageError::Permanent(format!(
                "cannot decode {filename}: ffprobe did not finish within {} s (PROBE_TIMEOUT)",
                limit.as_secs_f64()
            )),
            ProbeError::Run(err) => StageError::transient("running ffprobe", err),
        }
    }
}

/// Probes `media` with `ffprobe`, through the allowed demuxers only; an ffprobe still running
/// after `timeout` is killed.
pub async fn probe(ffprobe: &Path, media: &Path, timeout: Duration) -> Result<Probe, ProbeError> {
    let probed = tokio::process::Command::new(ffprobe)
        // Debug level for the line that names the format ffprobe detected (also when it is not
        // allowed); level prefixes to tell the errors apart.
        .args(["-loglevel", "repeat+level+debug", "-of", "json"])
        .args(["-protocol_whitelist", "file"])
        .args(["-format_whitelist", &ALLOWED_FORMATS.join(",")])
        .args([
            "-show_entries",
            "stream=index,codec_type,channels,channel_layout:stream_disposition=default:format=format_name,duration",
        ])
        .arg(media)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, probed)
        .await
        .map_err(|_| ProbeError::TimedOut(timeout))?
        .map_err(ProbeError::Run)?;
    if !output.status.success() {
        return Err(probe_failure(&String::from_utf8_lossy(&output.stderr)));
    }
    parse_probe(&output.stdout)
}

/// Why ffprobe failed, from its log (`repeat+level+debug`).
fn probe_failure(log: &str) -> ProbeError {
    if log.contains("Format not on whitelist") {
        let detected = log.lines().find_map(|line| {
            let rest = line.split("] Format ").nth(1)?;
            rest.split_once(" probed with")
                .map(|(name, _)| name.to_owned())
        });
        return ProbeError::Unsupported(detected);
    }
    let reason = log
        .lines()
        .rev()
        .find(|line| line.contains("[error]") || line.contains("[fatal]"))
        .map(clean_ffmpeg_line)
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| "not a media file ffmpeg can read".to_owned());
    ProbeError::Unreadable(reason)
}

fn parse_probe(json: &[u8]) -> Result<Probe, ProbeError> {
    #[derive(serde::Deserialize)]
    struct Output {
        #[serde(default)]
        streams: Vec<Stream>,
        format: Option<Format>,
    }
    #[derive(serde::Deserialize)]
    struct Stream {
        index: u32,
        codec_type: Option<String>,
        channels: Option<u32>,
        channel_layout: Option<String>,
        disposition: Option<Disposition>,
    }
    #[derive(serde::Deserialize)]
    struct Disposition {
        #[serde(default)]
        default: u8,
    }
    #[derive(serde::Deserialize)]
    struct Format {
        format_name: Option<String>,
        duration: Option<String>,
    }
    let output: Output = serde_json::from_slice(json)
        .map_err(|err| ProbeError::Unreadable(format!("unexpected ffprobe output: {err}")))?;
    let format = output.format.unwrap_or(Format {
        format_name: None,
        duration: None,
    });
    // `mov,mp4,m4a,3gp,3g2,mj2`: the demuxer's names; ffmpeg takes any of them.
    let format_name = format.format_name.unwrap_or_default();
    let format_name = format_name.split(',').next().unwrap_or_default().to_owned();
    if !ALLOWED_FORMATS.contains(&format_name.as_str()) {
        let named = (!format_name.is_empty()).then_some(format_name);
        return Err(ProbeError::Unsupported(named));
    }
    let audio: Vec<&Stream> = output
        .streams
        .iter()
        .filter(|stream| stream.codec_type.as_deref() == Some("audio"))
        .collect();
    let chosen = audio
        .iter()
        .find(|stream| stream.disposition.as_ref().is_some_and(|d| d.default == 1))
        .or(audio.first())
        .ok_or(ProbeError::NoAudio)?;
    let duration_s = format
        .duration
        .and_then(|duration| duration.parse::<f64>().ok())
        .filter(|duration| duration.is_finite() && *duration > 0.0);
    Ok(Probe {
        format: format_name,
        audio_stream: chosen.index,
        channels: chosen.channels.filter(|channels| *channels > 0),
        channel_layout: chosen
            .channel_layout
            .clone()
            .filter(|name| is_layout_name(name)),
        duration_s,
    })
}

/// Whether ffprobe's name for a channel layout is one to hand back to ffmpeg: a short name of
/// letters, digits and `().+-` (`unknown` is no layout).
fn is_layout_name(name: &str) -> bool {
    name != "unknown"
        && (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "().+-".contains(c))
}

/// Slack for containers that round their duration up.
const DURATION_SLACK_S: f64 = 1.0;

/// The media is longer than MAX_DURATION: the reason the job fails with.
pub fn too_long(filename: &str, duration_s: f64, max: Duration) -> Option<StageError> {
    (duration_s > max.as_secs_f64() + DURATION_SLACK_S).then(|| {
        StageError::Permanent(format!(
            "{filename} is {} long; MAX_DURATION is {}",
            clock(duration_s),
            clock(max.as_secs_f64())
        ))
    })
}

/// Decoding ran past MAX_DURATION (and its slack) although the header said less (or nothing):
/// the reason the job fails with.
pub fn ran_past(filename: &str, decoded_s: f64, max: Duration) -> Option<StageError> {
    (decoded_s > max.as_secs_f64() + DURATION_SLACK_S).then(|| {
        StageError::Permanent(format!(
            "{filename} is longer than MAX_DURATION ({}), whatever its header says",
            clock(max.as_secs_f64())
        ))
    })
}

/// The most channels a job may have transcribed one by one (channels=split): each costs a
/// transcription of the whole media.
pub const MAX_SPLIT_CHANNELS: u32 = 8;

/// How many audio blobs the probed audio becomes: one for `Mix`, one per channel for `Split`
/// (a stream whose channels ffprobe did not tell counts as mono); more than
/// [`MAX_SPLIT_CHANNELS`] is the reason the job fails with.
pub fn output_channels(
    filename: &str,
    requested: Channels,
    probed: Option<u32>,
) -> Result<u16, StageError> {
    match (requested, probed.unwrap_or(1)) {
        (Channels::Mix, _) => Ok(1),
        (Channels::Split, channels) if channels > MAX_SPLIT_CHANNELS => {
            Err(StageError::Permanent(format!(
                "channels=split: {filename} has {channels} audio channels; at most \
                 {MAX_SPLIT_CHANNELS} are transcribed one by one (channels=mix mixes them)"
            )))
        }
        (Channels::Split, channels) => Ok(channels as u16),
    }
}

/// Decoding `duration_s` of media (when known) into `channels` audio blobs would leave the disk of the decoded audio with
/// less than `min_free` bytes of its `free` (`None`: a remote store, not checked): the reason
/// the job fails with, rather than filling the disk.
pub fn short_of_space(
    filename: &str,
    duration_s: Option<f64>,
    channels: u16,
    free: Option<u64>,
    min_free: u64,
) -> Option<StageError> {
    let free = free?;
    let pcm_per_second = f64::from(pcm::SAMPLE_RATE * pcm::CHANNELS * u32::from(channels))
        * pcm::BYTES_PER_SAMPLE as f64;
    let needed = (duration_s.unwrap_or(0.0).max(0.0) * pcm_per_second) as u64;
    (free < min_free.saturating_add(needed)).then(|| {
        StageError::Permanent(format!(
            "cannot decode {filename}: the server is short of disk space; submit it again later"
        ))
    })
}

/// `H:MM:SS`.
fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", whole / 3600, whole / 60 % 60, whole % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_audio_stream_of_a_video_is_chosen() {
        let probe = parse_probe(
            br#"{"streams":[{"index":0,"codec_type":"video","disposition":{"default":1}},
                {"index":1,"codec_type":"audio","channels":6,"disposition":{"default":0}},
                {"index":2,"codec_type":"audio","channels":2,"channel_layout":"stereo","disposition":{"default":1}}],
                "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"12.5"}}"#,
        )
        .expect("probe");
        assert_eq!(
            probe,
            Probe {
                format: "mov".into(),
                audio_stream: 2,
                channels: Some(2),
                channel_layout: Some("stereo".into()),
                duration_s: Some(12.5)
            }
        );
        assert!(matches!(
            parse_probe(br#"{"streams":[{"index":0,"codec_type":"video"}],"format":{"format_name":"matroska,webm"}}"#),
            Err(ProbeError::NoAudio)
        ));
        assert!(matches!(
            parse_probe(br#"{"streams":[],"format":{"format_name":"hls"}}"#),
            Err(ProbeError::Unsupported(Some(name))) if name == "hls"
        ));
    }

    #[test]
    fn a_format_off_the_list_is_named_from_ffprobes_log() {
        let refused = "[hls @ 0x5593] [debug] Format hls probed with size=2048 and score=100\n\
                       [hls @ 0x5593] [error] Format not on whitelist 'mov,wav'\n\
                       [error] input: Invalid argument\n";
        let damaged = "[mov,mp4 @ 0x55] [debug] Format mov,mp4,m4a probed with size=2048\n\
                       [mov,mp4 @ 0x55] [error] moov atom not found\n\
                       [error] /tmp/x/input: Invalid data found when processing input\n";
        let cases = [
            (refused, "unsupported format hls"),
            (damaged, "Invalid data found when processing input"),
            ("", "not a media file ffmpeg can read"),
        ];
        for (log, expected) in cases {
            let reason = match probe_failure(log).into_stage_error("talk.mp3") {
                StageError::Permanent(reason) => reason,
                other => panic!("{other:?}"),
            };
            assert!(reason.starts_with("cannot decode talk.mp3: "), "{reason}");
            assert!(reason.ends_with(expected), "{reason}");
        }
    }

    #[test]
    fn a_probe_failure_names_the_upload_and_only_a_missing_ffprobe_is_retried() {
        let cases = [
            (
                ProbeError::Unreadable("Invalid data found".into()),
                Some("cannot decode talk.mp3: Invalid data found"),
            ),
            (
                ProbeError::Unsupported(Some("concat".into())),
                Some("cannot decode talk.mp3: unsupported format concat"),
            ),
            (ProbeError::NoAudio, Some("no audio stream in talk.mp3")),
            (ProbeError::Run(std::io::Error::other("not found")), None),
            (
                ProbeError::Run(std::io::ErrorKind::PermissionDenied.into()),
                None,
            ),
        ];
        for (error, permanent) in cases {
            match (error.into_stage_error("talk.mp3"), permanent) {
                (StageError::Permanent(reason), Some(expected)) => assert_eq!(reason, expected),
                (
                    StageError::Transient { context, .. } | StageError::Unavailable { context, .. },
                    None,
                ) => assert_eq!(context, "running ffprobe"),
                (other, expected) => panic!("{other:?} instead of {expected:?}"),
            }
        }
    }

    #[test]
    fn media_longer_than_max_duration_is_refused_with_both_lengths() {
        let hour = Duration::from_secs(3600);
        let cases = [
            (
                36_000.0,
                Some("bomb.flac is 10:00:00 long; MAX_DURATION is 1:00:00"),
            ),
            (3_600.4, None),
            (
                3_661.0,
                Some("bomb.flac is 1:01:01 long; MAX_DURATION is 1:00:00"),
            ),
            (59.0, None),
        ];
        for (duration_s, expected) in cases {
            let reason = too_long("bomb.flac", duration_s, hour).map(|err| err.reason());
            assert_eq!(reason.as_deref(), expected, "{duration_s}");
        }
        let decoded = ran_past("chain.ogg", 3_602.0, hour).map(|err| err.reason());
        assert_eq!(
            decoded.as_deref(),
            Some("chain.ogg is longer than MAX_DURATION (1:00:00), whatever its header says")
        );
        assert!(ran_past("chain.ogg", 3_600.0, hour).is_none());
    }

    #[test]
    fn only_plain_layout_names_go_back_to_ffmpeg() {
        for (name, kept) in [
            ("stereo", true),
            ("5.1(side)", true),
            ("7.1(wide)", true),
            ("unknown", false),
            ("", false),
            ("quad -i /etc/passwd", false),
        ] {
            assert_eq!(is_layout_name(name), kept, "{name:?}");
        }
    }

    #[test]
    fn split_channels_are_counted_from_the_probe_and_bounded() {
        let cases = [
            (Channels::Mix, Some(6), Ok(1)),
            (Channels::Mix, Some(64), Ok(1)),
            (Channels::Split, None, Ok(1)),
            (Channels::Split, Some(1), Ok(1)),
            (Channels::Split, Some(2), Ok(2)),
            (Channels::Split, Some(8), Ok(8)),
            (
                Channels::Split,
                Some(9),
                Err(
                    "channels=split: call.wav has 9 audio channels; at most 8 are \
                     transcribed one by one (channels=mix mixes them)",
                ),
            ),
        ];
        for (requested, probed, expected) in cases {
            let counted = output_channels("call.wav", requested, probed).map_err(|e| e.reason());
            assert_eq!(
                counted,
                expected.map_err(str::to_owned),
                "{requested:?} {probed:?}"
            );
        }
    }

    #[test]
    fn decoding_is_refused_when_its_audio_would_leave_less_than_min_free_space() {
        let gib = 1u64 << 30;
        // An hour of PCM is 115.2 MB per channel.
        let cases = [
            (Some(3600.0), 1, None, false),
            (Some(3600.0), 1, Some(2 * gib), true),
            (Some(3600.0), 1, Some(2 * gib + 116_000_000), false),
            (Some(3600.0), 2, Some(2 * gib + 116_000_000), true),
            (Some(3600.0), 2, Some(2 * gib + 231_000_000), false),
            (None, 1, Some(2 * gib - 1), true),
            (None, 1, Some(2 * gib), false),
        ];
        for (duration_s, channels, free, refused) in cases {
            let reason =
                short_of_space("long.mp3", duration_s, channels, free, 2 * gib).map(|e| e.reason());
            assert_eq!(reason.is_some(), refused, "{duration_s:?} {free:?}");
            if let Some(reason) = reason {
                assert!(reason.starts_with("cannot decode long.mp3: the server is short"));
            }
        }
    }
}
