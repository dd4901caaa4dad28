//! Subtitle files from segments: SubRip (SRT) and WebVTT, with cues of at most two lines of 42
//! columns (a CJK character takes two) and at most 7 seconds, the common broadcast limits for
//! readability, and cues and lines broken where the text breaks (a sentence's end, a clause's,
//! before a conjunction; in Chinese and Japanese, written without spaces, after their
//! punctuation), as broadcast subtitle guidelines ask.

use proto_msgs::Segment;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Columns per subtitle line (a CJK character takes two).
pub const MAX_LINE_COLUMNS: usize = 42;
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

/// A piece of a segment's text with its time on screen: a word, or a part of one that is too
/// long for a line or written without spaces (Chinese, Japanese), cut after its punctuation.
#[derive(Debug, Clone, Copy)]
struct Piece<'a> {
    text: &'a str,
    /// Joined to the piece before without a space: a part of the same word.
    glued: bool,
    start: f64,
    end: f64,
}

/// Columns `text` takes on screen: CJK characters take two, as subtitle guidelines count them
/// (2 × 42 columns hold 2 × 21 Chinese characters, close to the 16–20 of broadcast practice).
fn columns(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// Whether `c` takes two columns (CJK characters and full-width punctuation).
fn is_wide(c: char) -> bool {
    UnicodeWidthChar::width(c) == Some(2)
}

/// Columns of `pieces` written as one line: a space before each piece not glued to the one
/// before (never before the first).
fn line_columns(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| columns(piece.text) + usize::from(index > 0 && !piece.glued))
        .sum()
}

/// `pieces` written as one line.
fn join(pieces: &[Piece]) -> String {
    let mut line = String::new();
    for (index, piece) in pieces.iter().enumerate() {
        if index > 0 && !piece.glued {
            line.push(' ');
        }
        line.push_str(piece.text);
    }
    line
}

/// Wraps `pieces` into lines of at most `width` columns.
fn wrap(pieces: &[Piece], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut first = 0;
    for end in 1..=pieces.len() {
        if end == pieces.len() || line_columns(&pieces[first..=end]) > width {
            lines.push(join(&pieces[first..end]));
            first = end;
        }
    }
    lines
}

/// Punctuation that ends a sentence.
const SENTENCE_ENDS: &[char] = &['.', '?', '!', '…', '。', '？', '！'];
/// Punctuation that ends a clause.
const CLAUSE_ENDS: &[char] = &[',', ';', ':', '–', '—', '，', '、', '；', '：'];
/// Closing marks that stay with the punctuation before them.
const CLOSING_MARKS: &[char] = &['」', '』', '）', '》', '”', '’', '"', '\'', ')', ']', '»'];

/// Punctuation after which a cue or a line may break inside a word written without spaces
/// (not a dash, which joins as often as it separates there).
fn is_breaking_punctuation(c: char) -> bool {
    (SENTENCE_ENDS.contains(&c) || CLAUSE_ENDS.contains(&c)) && !matches!(c, '–' | '—')
}

/// Cuts a word (a run without spaces) into pieces: after punctuation followed by more of a
/// language written without spaces (a full-width mark, or a wide character next), then any
/// piece still wider than a line every `width` columns.
fn pieces_of_word(word: &str, width: usize) -> Vec<&str> {
    let mut clauses = Vec::new();
    let mut first = 0;
    let mut chars = word.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if !is_breaking_punctuation(c) {
            continue;
        }
        while chars
            .next_if(|(_, next)| CLOSING_MARKS.contains(next))
            .is_some()
        {}
        let Some(&(at, next)) = chars.peek() else {
            break;
        };
        if is_wide(c) || is_wide(next) {
            clauses.push(&word[first..at]);
            first = at;
        }
    }
    clauses.push(&word[first..]);
    clauses
        .into_iter()
        .flat_map(|clause| cut_to_lines(clause, width))
        .collect()
}

/// `text` cut into parts of at most `width` columns (at characters).
fn cut_to_lines(text: &str, width: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut first = 0;
    for (at, c) in text.char_indices() {
        // The width of the part with this character: measured on the text, not summed per
        // character (an emoji and its variation selector take two columns together).
        if at > first && columns(&text[first..at + c.len_utf8()]) > width {
            parts.push(&text[first..at]);
            first = at;
        }
    }
    parts.push(&text[first..]);
    parts
}

/// The pieces of a segment with their times: from the word timestamps when the job has them
/// and they spell the text (each piece from its first character's word to its last one's),
/// otherwise the segment's time shared among the pieces in proportion to their length.
fn timed_pieces(segment: &Segment, width: usize) -> Vec<Piece<'_>> {
    let mut pieces: Vec<Piece> = segment
        .text
        .split_whitespace()
        .flat_map(|word| {
            pieces_of_word(word, width)
                .into_iter()
                .enumerate()
                .map(|(index, text)| Piece {
                    text,
                    glued: index > 0,
                    start: segment.start,
                    end: segment.end,
                })
        })
        .collect();
    let timed = segment.words.as_deref().unwrap_or_default();
    if !time_by_words(&mut pieces, timed) {
        time_by_length(&mut pieces, segment.start, segment.end);
    }
    pieces
}

/// Times each piece from the words that speak its characters; false (nothing changed) when the
/// words do not spell the pieces character for character.
fn time_by_words(pieces: &mut [Piece], words: &[proto_msgs::Word]) -> bool {
    let char_times: Vec<(char, f64, f64)> = words
        .iter()
        .flat_map(|w| {
            w.word
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| (c, w.start, w.end))
        })
        .collect();
    let spelled = char_times.iter().map(|(c, _, _)| *c);
    if words.is_empty() || !spelled.eq(pieces.iter().flat_map(|p| p.text.chars())) {
        return false;
    }
    let mut first = 0;
    for piece in pieces {
        let last = first + piece.text.chars().count() - 1;
        (piece.start, piece.end) = (char_times[first].1, char_times[last].2);
        first = last + 1;
    }
    true
}

/// Shares `start..end` among the pieces in proportion to their characters (a space counted
/// before each word).
fn time_by_length(pieces: &mut [Piece], start: f64, end: f64) {
    let length = |piece: &Piece| piece.text.chars().count() + usize::from(!piece.glued);
    let total: usize = pieces.iter().map(length).sum();
    let span = (end - start).max(0.0);
    let time_at = |before: usize| start + span * before as f64 / total.max(1) as f64;
    let mut before = 0;
    for piece in pieces {
        piece.start = time_at(before);
        before += length(piece);
        piece.end = time_at(before);
    }
}

/// Splits segments into cues of at most two lines of [`MAX_LINE_COLUMNS`] columns and seven
/// seconds, each ending where the text breaks best (see [`cue_end`]).
pub fn cues(segments: &[Segment]) -> Vec<Cue> {
    cues_beside_labels(segments, |_| 0)
}

/// [`cues`] whose lines leave room for a label of `label_columns(channel)` columns written in
/// front of the first, so that the labelled line still fits [`MAX_LINE_COLUMNS`] (both lines
/// are narrowed: which of them is first is known only once the cue is cut).
fn cues_beside_labels(
    segments: &[Segment],
    label_columns: impl Fn(Option<u16>) -> usize,
) -> Vec<Cue> {
    let mut cues = Vec::new();
    for segment in segments {
        let width = MAX_LINE_COLUMNS
            .saturating_sub(label_columns(segment.channel))
            .max(1);
        let pieces = timed_pieces(segment, width);
        let mut first = 0;
        while first < pieces.len() {
            let last = cue_end(&pieces, first, width);
            let start = pieces[first].start;
            cues.push(Cue {
                start,
                end: pieces[last - 1].end.clamp(start, start + MAX_CUE_SECONDS),
                lines: lines_of(&pieces[first..last], width),
                channel: segment.channel,
            });
            first = last;
        }
    }
    cues
}

/// A cue is at least this share of the longest that fits (in columns) when it ends at a
/// better break than that one.
const MIN_CUE_SHARE: f64 = 1.0 / 3.0;

/// Where the cue starting at piece `first` ends (exclusive): the rest of the segment if it fits
/// in two lines and seven seconds; otherwise the best break among the ends that fit, as
/// broadcast guidelines ask: a sentence's end, then a clause's, then before a conjunction, the
/// latest of the best kind, but never a cue shorter than [`MIN_CUE_SHARE`] of the longest.
fn cue_end(pieces: &[Piece], first: usize, width: usize) -> usize {
    let mut longest = first + 1;
    while longest < pieces.len() {
        let fits_lines = wrap(&pieces[first..=longest], width).len() <= MAX_LINES;
        let fits_time = pieces[longest].end - pieces[first].start <= MAX_CUE_SECONDS;
        if !(fits_lines && fits_time) {
            break;
        }
        longest += 1;
    }
    if longest == pieces.len() {
        return longest;
    }
    // Measured with the space after the cue's last piece, as lengths were before columns.
    let length = |end: usize| line_columns(&pieces[first..end]) + 1;
    let shortest = MIN_CUE_SHARE * length(longest) as f64;
    (first + 1..=longest)
        .filter(|end| length(*end) as f64 >= shortest)
        .max_by_key(|end| {
            let next = pieces.get(*end).map(|piece| piece.text);
            (break_quality(pieces[end - 1].text, next), *end)
        })
        .unwrap_or(longest)
}

/// The lines of a cue: one if it fits; otherwise two, broken where the text breaks best, the
/// two lines as even as they can be among breaks of that kind.
fn lines_of(pieces: &[Piece], width: usize) -> Vec<String> {
    let wrapped = wrap(pieces, width);
    if wrapped.len() != MAX_LINES {
        return wrapped;
    }
    let best = (1..pieces.len())
        .filter(|at| line_columns(&pieces[..*at]) <= width && line_columns(&pieces[*at..]) <= width)
        .max_by_key(|at| {
            let imbalance = line_columns(&pieces[..*at]).abs_diff(line_columns(&pieces[*at..]));
            (
                break_quality(pieces[at - 1].text, Some(pieces[*at].text)),
                std::cmp::Reverse(imbalance),
            )
        });
    match best {
        Some(at) => vec![join(&pieces[..at]), join(&pieces[at..])],
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
    let word = word.trim_end_matches(CLOSING_MARKS);
    if word.ends_with(SENTENCE_ENDS) && !is_abbreviation(word) {
        return 3;
    }
    if word.ends_with(CLAUSE_ENDS) {
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

/// The label of a SubRip cue's channel, written in front of its first line.
fn srt_label(channel: Option<u16>) -> String {
    channel
        .map(|channel| format!("[Channel {channel}] "))
        .unwrap_or_default()
}

/// A SubRip file; with channels=split, each cue starts with its channel (`[Channel 1] `):
/// SubRip has no voice markup, and a label in the text is what players show as it is, so the
/// cue's lines leave room for it.
pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    let cues = cues_beside_labels(segments, |channel| columns(&srt_label(channel)));
    for (index, cue) in cues.iter().enumerate() {
        let label = srt_label(cue.channel);
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
                    .all(|l| l.chars().count() <= MAX_LINE_COLUMNS),
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
        // A short sentence first is a cue of its own, as it was before lines were measured in
        // columns.
        let short_first = "No, I do not think so. The weather was terrible all week and nobody \
                           wanted to go outside for very long at all.";
        let first_cue = &cues(&[segment(0.0, 10.5, short_first)])[0];
        assert_eq!(first_cue.lines, vec!["No, I do not think so."]);
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
            assert_eq!(
                lines_of(
                    &timed_pieces(&segment(0.0, 5.0, text), MAX_LINE_COLUMNS),
                    MAX_LINE_COLUMNS
                ),
                lines,
                "{text}"
            );
        }
    }

    /// The cues hold at most two lines of [`MAX_LINE_COLUMNS`] columns.
    fn assert_cues_fit(cues: &[Cue]) {
        for cue in cues {
            assert!(cue.lines.len() <= MAX_LINES, "{cue:?}");
            assert!(
                cue.lines
                    .iter()
                    .all(|line| columns(line) <= MAX_LINE_COLUMNS),
                "{cue:?}"
            );
        }
    }

    #[test]
    fn words_written_without_spaces_are_cut_after_punctuation_then_to_fit_a_line() {
        let long = "a".repeat(100);
        let cases: [(&str, Vec<&str>); 7] = [
            (
                "今日は、いい天気ですね。",
                vec!["今日は、", "いい天気ですね。"],
            ),
            (
                "他说：「好。」然后走了",
                vec!["他说：", "「好。」", "然后走了"],
            ),
            ("我们,然后", vec!["我们,", "然后"]),
            // Dots and commas inside a Latin word are no breaks.
            ("U.S.", vec!["U.S."]),
            ("3,14", vec!["3,14"]),
            ("Americans,", vec!["Americans,"]),
            (&long, vec![&long[..42], &long[42..84], &long[84..]]),
        ];
        for (word, pieces) in cases {
            assert_eq!(pieces_of_word(word, MAX_LINE_COLUMNS), pieces, "{word}");
        }
        let han = "广州市房地产中介协会分析广州市房地产中介协会分析";
        assert_eq!(
            pieces_of_word(han, MAX_LINE_COLUMNS)
                .iter()
                .map(|p| columns(p))
                .collect::<Vec<_>>(),
            vec![42, 6]
        );
    }

    #[test]
    fn chinese_and_japanese_cues_fit_two_lines_and_break_at_their_punctuation() {
        let zh = "广州市房地产中介协会分析，今年以来房地产市场出现了明显的变化。\
                  成交量大幅下降，价格也开始松动，很多购房者选择观望。\
                  专家认为这种情况还会持续一段时间。";
        let cues = cues(&[segment(0.0, 14.0, zh)]);
        assert_cues_fit(&cues);
        let text: String = cues
            .iter()
            .flat_map(|cue| cue.lines.concat().chars().collect::<Vec<_>>())
            .collect();
        assert_eq!(text, zh, "every character, no space added");
        for cue in &cues {
            let last = cue.lines.last().and_then(|line| line.chars().last());
            assert!(matches!(last, Some('。' | '，')), "{cue:?}");
        }
        assert_eq!(
            cues[0].lines,
            vec![
                "广州市房地产中介协会分析，",
                "今年以来房地产市场出现了明显的变化。"
            ]
        );
        let ja = "客観的実在の判断的知識が成立するのである。".repeat(4);
        let ja_cues = super::cues(&[segment(0.0, 12.0, &ja)]);
        assert_cues_fit(&ja_cues);
        assert_eq!(ja_cues.len(), 2, "{ja_cues:?}");
        assert_eq!(
            ja_cues[0].lines,
            vec!["客観的実在の判断的知識が成立するのである。"; 2]
        );
    }

    #[test]
    fn a_word_longer_than_a_line_is_cut_to_fit() {
        let url = format!("https://example.com/{}", "x".repeat(80));
        let cues = cues(&[segment(0.0, 6.0, &format!("Visit {url} today."))]);
        assert_cues_fit(&cues);
        let text: Vec<String> = cues.iter().map(|cue| cue.lines.concat()).collect();
        assert_eq!(text.concat().replace(' ', ""), format!("Visit{url}today."));
        // Measured on the text: an emoji with its variation selector takes two columns.
        let hearts = "❤\u{FE0F}".repeat(42);
        let parts = cut_to_lines(&hearts, MAX_LINE_COLUMNS);
        assert!(
            parts.iter().all(|part| columns(part) <= MAX_LINE_COLUMNS),
            "{parts:?}"
        );
        assert_eq!(parts.concat(), hearts);
    }

    /// `words` with times: the first `first_burst` from 0 s, the others from `second_at`, one
    /// every `step` seconds, each lasting `length`.
    fn spoken_in_two_bursts(
        words: impl Iterator<Item = String>,
        first_burst: usize,
        second_at: f64,
        step: f64,
        length: f64,
    ) -> Vec<proto_msgs::Word> {
        words
            .enumerate()
            .map(|(index, word)| {
                let start = match index.checked_sub(first_burst) {
                    None => index as f64 * step,
                    Some(later) => second_at + later as f64 * step,
                };
                proto_msgs::Word {
                    start,
                    end: start + length,
                    word,
                    probability: 0.9,
                }
            })
            .collect()
    }

    #[test]
    fn cues_of_chinese_follow_the_times_of_its_characters() {
        // Whisper's words in Chinese are characters or short runs: "广州", "市", ...
        let text = "广州市房地产中介协会分析，今年以来房地产市场出现了明显的变化。";
        let mut timed = segment(0.0, 30.0, text);
        // The first clause (13 characters) is spoken at 0-2.6 s, the second at 20 s.
        let characters = text.chars().map(String::from);
        timed.words = Some(spoken_in_two_bursts(characters, 13, 20.0, 0.2, 0.15));
        let times: Vec<(f64, f64)> = cues(&[timed]).iter().map(|c| (c.start, c.end)).collect();
        assert_eq!(times.len(), 2, "{times:?}");
        assert!(
            (times[0].0 - 0.0).abs() < 1e-9 && (times[0].1 - 2.55).abs() < 1e-9,
            "{times:?}"
        );
        assert!(
            (times[1].0 - 20.0).abs() < 1e-9 && (times[1].1 - 23.55).abs() < 1e-9,
            "{times:?}"
        );
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
            // Chinese and Japanese: full-width marks, a quotation closed after its end.
            ("「好。」", Some("然后走了"), 3),
            ("他说：", Some("「好。」"), 2),
            ("今日は、", Some("いい天気ですね。"), 2),
        ];
        for (word, next, quality) in cases {
            assert_eq!(break_quality(word, next), quality, "{word} {next:?}");
        }
    }

    #[test]
    fn cues_follow_word_timestamps_when_the_job_has_them() {
        // Eight words of 4 characters over 20 s, spoken in two bursts: 0-2 s and 15-17 s.
        let words = (0..8).map(|i| format!("w{i:03}"));
        let mut timed_segment = segment(0.0, 20.0, "");
        timed_segment.words = Some(spoken_in_two_bursts(words, 4, 15.0, 0.5, 0.4));
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

    #[test]
    fn a_labelled_srt_line_still_fits_the_line_limit() {
        let mut long = segment(
            0.0,
            6.0,
            "We will ship the order on Monday morning, and the invoice follows by email.",
        );
        long.channel = Some(1);
        let file = srt(&[long.clone()]);
        let lines: Vec<&str> = file.lines().filter(|line| !line.contains("-->")).collect();
        assert!(
            lines.iter().any(|line| line.starts_with("[Channel 1] ")),
            "{file}"
        );
        assert!(
            lines.iter().all(|line| columns(line) <= MAX_LINE_COLUMNS),
            "{file}"
        );
        // WebVTT's voice tag takes no room on screen: its lines keep the whole width.
        assert_eq!(cues(&[long]).len(), 1);
    }
}
