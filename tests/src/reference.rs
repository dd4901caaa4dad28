//! What the tests compare against: the fixtures, the reference transcripts of the English clips, word
//! error rate, and the shape of a refused request.

use std::path::PathBuf;

/// What is said in `tests/fixtures/jfk.flac`.
pub const JFK_REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// What is said in `tests/fixtures/librispeech.wav` (LibriSpeech's transcript).
pub const LIBRISPEECH_REFERENCE: &str = "It was the first great sorrow of his life it was not so much the loss of the cotton itself but the fantasy the hopes the dreams built around it";

/// What is said in `tests/fixtures/quilter.wav` (LibriSpeech's transcript).
pub const QUILTER_REFERENCE: &str =
    "Mr. Quilter is the apostle of the middle classes and we are glad to welcome his gospel.";

/// The repository root.
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The Python of `make pytools` (`vendor/python`), with the tests' Python tools.
pub fn pytools_python() -> PathBuf {
    let python = repo_root().join("vendor/python/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make pytools`",
        python.display()
    );
    python
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Word error rate of `hypothesis` against `reference`, after lower-casing and removing
/// punctuation: (substitutions + deletions + insertions) / reference words.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.to_lowercase()
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let reference = words(reference);
    let hypothesis = words(hypothesis);
    if reference.is_empty() {
        return if hypothesis.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut current = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[hypothesis.len()] as f64 / reference.len() as f64
}

/// Checks that `response` refused the request with `status` and a `detail` naming `field`;
/// returns the body.
pub async fn assert_refused(
    response: reqwest::Response,
    status: u16,
    field: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains(field)),
        "{body}"
    );
    body
}

#[cfg(test)]
mod tests {
    use super::word_error_rate;

    #[test]
    fn word_error_rate_counts_edits_per_reference_word() {
        let cases = [
            ("Ask not, what!", "ask not what", 0.0),
            ("a b c d", "a x c", 0.5),
            ("", "", 0.0),
            ("", "words", 1.0),
        ];
        for (reference, hypothesis, expected) in cases {
            assert_eq!(
                word_error_rate(reference, hypothesis),
                expected,
                "{hypothesis}"
            );
        }
    }
}
