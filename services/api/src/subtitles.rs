//! Subtitle files from segments: SubRip (SRT) and WebVTT, with cues of at most two lines of 42
//! characters and at most 7 seconds, the common broadcast limits for readability.

use proto_msgs::Segment;

/// Characters per subtitle line.
pub const MAX_LINE_CHARS: usize = 42;
/// Lines per cue.
pub const MAX_LINES: usize = 2;
/// Seconds a cue stays on screen at most.
pub const MAX_CUE_SECONDS: f64 = 7.0;

/// One subtitle: times in seconds and its (at most two) lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    pub lines: Vec<String>,
    /// The channel heard, with channels=split.
    pub channel: Option<u16>,
}

/// Wraps `words` into lines of at most [`MAX_LINE_CHARS`] (a longer single word gets a line of
/// its own).
fn wrap(words: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in words {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= MAX_LINE_CHARS => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push((*word).to_owned()),
        }
    }
    lines
}

/// A word of a segment with its time on screen.
struct TimedWord<'a> {
    text: &'a str,
    start: f64,
    end: f64,
}

/// The words of a segment with their times: the word timestamps when the job has them, otherwise
/// the segment's time shared among its words in proportion to their length.
fn timed_words(segment: &Segment) -> Vec<TimedWord<'_>> {
    let words: Vec<&str> = segment.text.split_whitespace().collect();
    if let Some(timed) = &segment.words {
        // Only where the timed words spell the text word for word (not in languages written
        // without spaces, whose "words" are characters).
        let spelled: Vec<&str> = timed.iter().map(|w| w.word.as_str()).collect();
        if spelled == words {
            return timed
                .iter()
                .map(|w| TimedWord {
                    text: &w.word,
                    start: w.start,
                    end: w.end,
                })
                .collect();
        }
    }
    let total_chars: usize = words.iter().map(|w| w.chars().count() + 1).sum();
    let span = (segment.end - segment.start).max(0.0);
    let time_at =
        |chars_before: usize| segment.start + span * chars_before as f64 / total_chars as f64;
    let mut chars_before = 0;
    words
        .into_iter()
        .map(|text| {
            let start = time_at(chars_before);
            chars_before += text.chars().count() + 1;
            TimedWord {
                text,
                start,
                end: time_at(chars_before),
            }
        })
        .collect()
}

/// Splits segments into cues: each grows word by word while it fits in two lines and seven
/// seconds.
pub fn cues(segments: &[Segment]) -> Vec<Cue> {
    let mut cues = Vec::new();
    for segment in segments {
        let words = timed_words(segment);
        let texts: Vec<&str> = words.iter().map(|w| w.text).collect();
        let mut first = 0;
        while first < words.len() {
            let mut last = first + 1;
            while last < words.len() {
                let fits_lines = wrap(&texts[first..=last]).len() <= MAX_LINES;
                let fits_time = words[last].end - words[first].start <= MAX_CUE_SECONDS;
                if !(fits_lines && fits_time) {
                    break;
                }
                last += 1;
            }
            let start = words[first].start;
            cues.push(Cue {
                start,
                end: words[last - 1].end.clamp(start, start + MAX_CUE_SECONDS),
                lines: wrap(&texts[first..last]),
                channel: segment.channel,
            });
            first = last;
        }
    }
    cues
}

fn timestamp(seconds: f64, decimal: char) -> String {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{decimal}{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

/// A SubRip file; with channels=split, each cue starts with its channel (`[Channel 1] `):
/// SubRip has no voice markup, and a label in the text is what players show as it is.
pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (index, cue) in cues(segments).iter().enumerate() {
        let label = cue
            .channel
            .map(|channel| format!("[Channel {channel}] "))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}\n{} --> {}\n{label}{}\n\n",
            index + 1,
            timestamp(cue.start, ','),
            timestamp(cue.end, ','),
            cue.lines.join("\n")
        ));
    }
    out
}

/// A WebVTT file; with channels=split, each cue names its channel as the voice speaking
/// (`<v Channel 1>`).
pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for cue in cues(segments) {
        // Cue text is markup: "<" and "&" escaped, and "-->" may not appear in it.
        let text = cue
            .lines
            .join("\n")
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let text = match cue.channel {
            Some(channel) => format!("<v Channel {channel}>{text}"),
            None => text,
        };
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(cue.start, '.'),
            timestamp(cue.end, '.'),
            text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.to_owned(),
            ..Segment::default()
        }
    }

    #[test]
    fn long_segments_become_cues_of_two_short_lines_and_at_most_seven_seconds() {
        let long = "word ".repeat(60);
        let segments = vec![segment(0.0, 30.0, &long), segment(30.0, 31.0, "Short.")];
        let cues = cues(&segments);
        assert!(cues.len() > 4, "{cues:?}");
        for cue in &cues {
            assert!(cue.lines.len() <= MAX_LINES, "{cue:?}");
            assert!(
                cue.lines
                    .iter()
                    .all(|l| l.chars().count() <= MAX_LINE_CHARS),
                "{cue:?}"
            );
            assert!(cue.end - cue.start <= MAX_CUE_SECONDS + 1e-9, "{cue:?}");
            assert!(cue.end >= cue.start);
        }
        assert!(
            cues.windows(2)
                .all(|pair| pair[0].end <= pair[1].start + 1e-9)
        );
        assert_eq!(
            cues.last().map(|c| c.lines.clone()),
            Some(vec!["Short.".to_owned()])
        );
    }

    #[test]
    fn cues_follow_word_timestamps_when_the_job_has_them() {
        // Eight words of 4 characters over 20 s, spoken in two bursts: 0-2 s and 15-17 s.
        let timed = |i: usize| {
            let start = if i < 4 {
                i as f64 * 0.5
            } else {
                15.0 + (i - 4) as f64 * 0.5
            };
            proto_msgs::Word {
                start,
                end: start + 0.4,
                word: format!("w{i:03}"),
                probability: 0.9,
            }
        };
        let mut timed_segment = segment(0.0, 20.0, "");
        timed_segment.words = Some((0..8).map(timed).collect());
        timed_segment.text = (0..8)
            .map(|i| format!("w{i:03}"))
            .collect::<Vec<_>>()
            .join(" ");
        let cues = cues(&[timed_segment]);
        let times: Vec<(f64, f64)> = cues.iter().map(|c| (c.start, c.end)).collect();
        // The pause splits the cues (7 s at most) and each cue is on screen while its words are.
        assert_eq!(times, vec![(0.0, 1.9), (15.0, 16.9)]);
    }

    #[test]
    fn srt_and_vtt_have_their_own_headers_and_time_formats() {
        let segments = vec![segment(3661.5, 3663.25, "Hello there.")];
        assert_eq!(
            srt(&segments),
            "1\n01:01:01,500 --> 01:01:03,250\nHello there.\n\n"
        );
        assert_eq!(
            vtt(&segments),
            "WEBVTT\n\n01:01:01.500 --> 01:01:03.250\nHello there.\n\n"
        );
    }

    #[test]
    fn vtt_names_the_channel_speaking_and_escapes_markup() {
        let mut left = segment(0.0, 1.0, "Salt & <b>pepper</b> --> here.");
        left.channel = Some(0);
        let mut right = segment(0.5, 2.0, "Yes.");
        right.channel = Some(1);
        assert_eq!(
            vtt(&[left, right]),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n\
             <v Channel 0>Salt &amp; &lt;b&gt;pepper&lt;/b&gt; --&gt; here.\n\n\
             00:00:00.500 --> 00:00:02.000\n<v Channel 1>Yes.\n\n"
        );
    }

    #[test]
    fn srt_labels_the_channel_speaking_at_the_start_of_each_cue() {
        let mut left = segment(0.0, 1.0, "Hello?");
        left.channel = Some(0);
        let mut right = segment(0.5, 2.0, "Yes.");
        right.channel = Some(1);
        assert_eq!(
            srt(&[left, right]),
            "1\n00:00:00,000 --> 00:00:01,000\n[Channel 0] Hello?\n\n\
             2\n00:00:00,500 --> 00:00:02,000\n[Channel 1] Yes.\n\n"
        );
    }
}
