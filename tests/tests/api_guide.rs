//! docs/API.md runs as written: its shell blocks (curl, and the `jetscribe` CLI under test) in
//! order as one `bash -euo pipefail` script,
//! and each Python block on its own (with the Python of `make pytools`), against a real
//! jetscribe with API keys, in a folder holding `jfk.flac`.

use std::path::Path;
use std::process::{Command, Output};

use jetscribe_tests::reference::{pytools_python, repo_root};
use jetscribe_tests::{TestApp, fixture};

const KEY: &str = "guide-reader-key-0123456789";

/// The code blocks of `markdown` fenced as ```` ```language ````, in order.
fn code_blocks(markdown: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, fence) if fence == format!("```{language}") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Runs `program args` in `dir` with the guide's environment; panics with its output if it fails.
fn run_in(dir: &Path, app: &TestApp, program: &Path, args: &[&str]) -> String {
    // A stalled job (the examples poll until it ends) fails the test instead of hanging it.
    let output: Output = Command::new("timeout")
        .arg("600")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", with_jetscribe_on_path())
        .env("JETSCRIBE_URL", &app.base_url)
        .env("JETSCRIBE_API_KEY", KEY)
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// PATH with the folder of the `jetscribe` binary under test first.
fn with_jetscribe_on_path() -> std::ffi::OsString {
    let binary = jetscribe_tests::app::jetscribe_binary();
    let folder = binary.parent().expect("a folder").to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(folder).chain(std::env::split_paths(&path)))
        .expect("a PATH")
}

#[test]
fn code_blocks_split_by_language_in_order() {
    let markdown = "text\n```sh\necho 1\n```\n```python\nprint(2)\n```\n```sh\necho 3\n```\n";
    assert_eq!(code_blocks(markdown, "sh"), vec!["echo 1\n", "echo 3\n"]);
    assert_eq!(code_blocks(markdown, "python"), vec!["print(2)\n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_of_the_api_guide_runs_as_written() {
    let guide = std::fs::read_to_string(repo_root().join("docs/API.md")).expect("docs/API.md");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(fixture("jfk.flac"), dir.path().join("jfk.flac")).expect("copied");
    let keys = format!("reader={KEY}");
    let app = TestApp::spawn(&[("API_KEYS", keys.as_str())]).await;
    let python = pytools_python();

    let (shell, pythons) = (code_blocks(&guide, "sh"), code_blocks(&guide, "python"));
    assert!(
        shell.len() >= 8 && pythons.len() >= 2,
        "the guide lost its examples"
    );
    let outputs = tokio::task::spawn_blocking(move || {
        let script = shell.join("\n");
        let mut outputs = vec![run_in(
            dir.path(),
            &app,
            Path::new("bash"),
            &["-euo", "pipefail", "-c", &script],
        )];
        for block in &pythons {
            outputs.push(run_in(dir.path(), &app, &python, &["-c", block]));
        }
        outputs
    })
    .await
    .expect("the examples ran");
    let all = outputs.join("\n");
    println!("{all}");
    // What the examples print: the transcript, its subtitles, the events, refusals.
    for expected in [
        "ask not what your country can do for you",
        "00:00:00,000 --> ",
        "event: completed",
        "\"status\":\"healthy\"",
        "jetscribe_jobs_submitted_total",
        "422 beam_size:",
        "transcript.text.done",
        "\"param\":\"response_format\"",
        "exit 1: the job has ended",
    ] {
        assert!(all.contains(expected), "{expected:?} not in:\n{all}");
    }
}
