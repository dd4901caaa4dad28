//! The web page at `/` in a real browser: Debian's Chromium (`make browser`) driven by
//! playwright (`make pytools`) through `tests/web/page_test.py`, against a server with keys. The
//! page asks for the key and turns a wrong one away, uploads the JFK clip, shows the job's
//! progress up to 100 %, the transcript (a segment and a word play the uploaded file from their
//! start), the language, and downloads the SRT. The screenshot is kept as
//! `target/web-page.png`.

use std::process::Command;

use jetscribe_tests::reference::{pytools_python, repo_root};
use jetscribe_tests::{TestApp, fixture};
use serde_json::Value;

const KEY: &str = "web-page-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_uploads_a_file_shows_its_progress_and_transcript_and_saves_subtitles() {
    let keys = format!("browser={KEY}");
    let app = TestApp::spawn(&[("API_KEYS", &keys)]).await;

    // The page's files need no key, and hold their scripts to the server's own files.
    let page = reqwest::get(app.url("/")).await.expect("the page answers");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    for path in ["/web/app.js", "/web/style.css"] {
        let file = reqwest::get(app.url(path)).await.expect("answers");
        assert_eq!(file.status(), 200, "{path}");
    }

    let screenshot = repo_root().join("target/web-page.png");
    let output = Command::new(pytools_python())
        .arg(repo_root().join("tests/web/page_test.py"))
        .args(["--url", &app.base_url, "--api-key", KEY])
        .arg("--file")
        .arg(fixture("jfk.flac"))
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("python runs");
    let summary = String::from_utf8_lossy(&output.stdout);
    println!("{summary}");
    assert!(
        output.status.success(),
        "the page test failed: {}\n{summary}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&summary).expect("the summary is JSON");
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}
