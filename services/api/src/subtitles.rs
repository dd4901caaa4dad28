//! Subtitle files from segments: SubRip (SRT) and WebVTT, with cues of at most two lines of 42
//! characters and at most 7 seconds, the common broadcast limits for readability, and cues and
//! lines broken where the text breaks (a sentence's end, a clause's, before a conjunction), as
//! broadcast subtitle guidelines ask.

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

/// Splits segments into cues of at most two lines and seven seconds, each ending where the
/// text breaks best (see [`cue_end`]).
pub fn cues(segments: &[Segment]) -> Vec<Cue> {
    let mut cues = Vec::new();
    for segment in segments {
        let words = timed_words(segment);
        let texts: Vec<&str> = words.iter().map(|w| w.text).collect();
        let mut first = 0;
        while first < words.len() {
            let last = cue_end(&words, &texts, first);
            let start = words[first].start;
            cues.push(Cue {
                start,
                end: words[last - 1].end.clamp(start, start + MAX_CUE_SECONDS),
                lines: lines_of(&texts[first..last]),
                channel: segment.channel,
            });
            first = last;
        }
    }
    cues
}

/// A cue is at least this share of the longest that fits (in characters) when it ends at a
/// better break than that one.
const MIN_CUE_SHARE: f64 = 1.0 / 3.0;

/// Where the cue starting at word `first` ends (exclusive): the rest of the segment if it fits
/// in two lines and seven seconds; otherwise the best break among the ends that fit, as
/// broadcast guidelines ask: a sentence's end, then a clause's, then before a conjunction, the
/// latest of the best kind, but never a cue shorter than [`MIN_CUE_SHARE`] of the longest.
fn cue_end(words: &[TimedWord], texts: &[&str], first: usize) -> usize {
    let mut longest = first + 1;
    while longest < words.len() {
        let fits_lines = wrap(&texts[first..=longest]).len() <= MAX_LINES;
        let fits_time = words[longest].end - words[first].start <= MAX_CUE_SECONDS;
        if !(fits_lines && fits_time) {
            break;
        }
        longest += 1;
    }
    if longest == words.len() {
        return longest;
    }
    let chars = |end: usize| {
        texts[first..end]
            .iter()
            .map(|w| w.chars().count() + 1)
            .sum::<usize>()
    };
    let shortest = MIN_CUE_SHARE * chars(longest) as f64;
    (first + 1..=longest)
        .filter(|end| chars(*end) as f64 >= shortest)
        .max_by_key(|end| {
            (
                break_quality(texts[end - 1], texts.get(*end).copied()),
                *end,
            )
        })
        .unwrap_or(longest)
}

/// The lines of a cue: one if it fits; otherwise two, broken where the text breaks best, the
/// two lines as even as they can be among breaks of that kind.
fn lines_of(words: &[&str]) -> Vec<String> {
    let wrapped = wrap(words);
    if wrapped.len() != MAX_LINES {
        return wrapped;
    }
    let length = |words: &[&str]| {
        words.iter().map(|w| w.chars().count()).sum::<usize>() + words.len().saturating_sub(1)
    };
    let best = (1..words.len())
        .filter(|at| {
            length(&words[..*at]) <= MAX_LINE_CHARS && length(&words[*at..]) <= MAX_LINE_CHARS
        })
        .max_by_key(|at| {
            let imbalance = length(&words[..*at]).abs_diff(length(&words[*at..]));
            (
                break_quality(words[at - 1], Some(words[*at])),
                std::cmp::Reverse(imbalance),
            )
        });
    match best {
        Some(at) => vec![words[..at].join(" "), words[at..].join(" ")],
        None => wrapped,
    }
}

/// English words before which a clause begins, where a line or cue may break. Other languages
/// break at punctuation only: a word list of one language makes bad breaks in another
/// (French "car", Italian "ma").
const CONJUNCTIONS: &[&str] = &[
    "and", "but", "or", "nor", "because", "although", "though", "while", "whereas", "when",
    "unless", "which", "who", "where",
];

/// How good a place to break after `word` (and before `next`) is: 3 the end of a sentence, 2 of
/// a clause (a comma, semicolon, colon or dash), 1 before a conjunction, 0 elsewhere.
fn break_quality(word: &str, next: Option<&str>) -> u8 {
    let word = word.trim_end_matches(['"', '\'', '”', '’', ')', ']', '»']);
    if word.ends_with(['.', '?', '!', '…', '。', '？', '！']) && !is_abbreviation(word) {
        return 3;
    }
    if word.ends_with([',', ';', ':', '–', '—', '，', '、', '；']) {
        return 2;
    }
    let starts_clause = next.is_some_and(|next| {
        let next = next
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        CONJUNCTIONS.contains(&next.as_str())
    });
    u8::from(starts_clause)
}

/// A word whose final dot marks an abbreviation, not a sentence's end: a title (`Mr.`), a
/// single letter (`J.`) or dotted letters (`U.S.`, `e.g.`).
fn is_abbreviation(word: &str) -> bool {
    const TITLES: &[&str] = &[
        "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "etc.", "no.",
    ];
    let Some(body) = word.strip_suffix('.') else {
        return false;
    };
    TITLES.contains(&word.to_lowercase().as_str())
        || body.chars().count() == 1
        || body.contains('.')
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
    fn cues_end_at_sentences_and_clauses_rather_than_where_they_fill_up() {
        let jfk = "And so my fellow Americans, ask not what your country can do for you, ask \
                   what you can do for your country.";
        let texts: Vec<Vec<String>> = cues(&[segment(0.0, 10.36, jfk)])
            .into_iter()
            .map(|cue| cue.lines)
            .collect();
        assert_eq!(
            texts,
            vec![
                vec![
                    "And so my fellow Americans,",
                    "ask not what your country can do for you,"
                ],
                vec!["ask what you can do for your country."],
            ]
        );
    }

    #[test]
    fn the_two_lines_of_a_cue_break_at_a_clause_then_as_evenly_as_they_can() {
        let cases = [
            (
                "I went to the market this morning, and then I came back.",
                vec![
                    "I went to the market this morning,",
                    "and then I came back.",
                ],
            ),
            (
                "We looked for the keys under the table and behind the old sofa",
                vec![
                    "We looked for the keys under the table",
                    "and behind the old sofa",
                ],
            ),
            (
                "one two three four five six seven eight nine ten eleven twelve",
                vec![
                    "one two three four five six seven",
                    "eight nine ten eleven twelve",
                ],
            ),
            ("Short enough.", vec!["Short enough."]),
        ];
        for (text, lines) in cases {
            let words: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(lines_of(&words), lines, "{text}");
        }
    }

    #[test]
    fn breaks_rank_sentence_ends_then_clause_ends_then_conjunctions() {
        let cases = [
            ("country.", None, 3),
            ("really?\"", Some("She"), 3),
            ("you,", Some("ask"), 2),
            ("words:", Some("one"), 2),
            ("table", Some("and"), 1),
            ("chose", Some("Because"), 1),
            ("the", Some("table"), 0),
            // Abbreviations end no sentence; a conjunction of another language is a word.
            ("Mr.", Some("Quilter"), 0),
            ("U.S.", Some("Senate"), 0),
            ("la", Some("car"), 0),
            ("Americans", None, 0),
        ];
        for (word, next, quality) in cases {
            assert_eq!(break_quality(word, next), quality, "{word} {next:?}");
        }
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
