//! What the tests against faster-whisper share: the repository's root, and running a reference
//! script on samples with the Python that `make pytools` installs into `vendor/python`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("services/transcriber is two folders down")
        .to_owned()
}

/// Runs `script` with `samples` written as f32 to a file in a fresh folder; `args` gets that
/// file and the folder (for the script's own output files) and returns the arguments to pass.
/// Returns the script's standard output and the folder, which the caller removes once read.
pub fn run_on_samples(
    name: &str,
    script: &str,
    samples: &[f32],
    args: impl FnOnce(&Path, &Path) -> Vec<String>,
) -> (Vec<u8>, PathBuf) {
    let python = repo_root().join("vendor/python/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make pytools`",
        python.display()
    );
    let folder = std::env::temp_dir().join(format!("jetscribe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let input = folder.join("samples.f32");
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&input, bytes).expect("samples written");
    let run = Command::new(python)
        .args(["-c", script])
        .args(args(&input, &folder))
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    (run.stdout, folder)
}
