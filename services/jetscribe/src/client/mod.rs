//! The client side of the `jetscribe` binary: `submit`, `status`, `result`, `watch`, `jobs` and
//! `cancel` against a running server (JETSCRIBE_URL, JETSCRIBE_API_KEY). On a terminal, an
//! upload shows a bar of bytes sent and its rate, and a job a bar of its progress with its stage,
//! media time and time left, driven by `/events`; otherwise there are no bars. The exit code
//! says how it went ([`Exit`]).

mod api;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;

use api::{Api, ClientError, JobEnd};

/// The subcommands of the client, beside the server's parts.
pub const COMMANDS: &[&str] = &["submit", "status", "result", "watch", "jobs", "cancel"];

/// How a client command ended, as its exit code (ordered: the worst of several is the
/// greatest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Done: the job completed, or the request was answered.
    Done = 0,
    /// The job failed or was cancelled (or cannot be cancelled: it has ended).
    JobFailed = 1,
    /// Bad usage: a bad argument, or a request the server refused as wrong (4xx).
    Usage = 2,
    /// The server cannot be reached, is unavailable (5xx) or busy (429).
    Unreachable = 3,
    /// `result` of a job still running.
    StillRunning = 4,
}

#[derive(Parser)]
#[command(
    name = "jetscribe",
    about = "Submits media to a jetscribe server and follows the jobs",
    after_help = "Exit codes: 0 done, 1 job failed or cancelled, 2 bad usage or request, \
                  3 server unreachable, unavailable or busy, 4 job still running (result)."
)]
struct ClientCli {
    /// The server.
    #[arg(
        long,
        env = "JETSCRIBE_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    url: String,
    /// An API key of the server (sent as `Authorization: Bearer`).
    #[arg(long, env = "JETSCRIBE_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Uploads files, a job each, and prints their ids; with --wait, follows each job and
    /// writes its result.
    Submit(SubmitArgs),
    /// A job's status, as JSON.
    Status { job_id: Uuid },
    /// A completed job's result.
    Result {
        job_id: Uuid,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Follows a job until it ends.
    Watch { job_id: Uuid },
    /// Your jobs, newest first, a page at a time.
    Jobs {
        /// Jobs on the page.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Only the jobs in this status.
        #[arg(long, value_parser = ["pending", "processing", "completed", "failed", "cancelled"])]
        status: Option<String>,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancels a job that has not ended.
    Cancel { job_id: Uuid },
}

#[derive(Args)]
struct SubmitArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The language spoken (a Whisper code such as `en`); detected without it.
    #[arg(long)]
    language: Option<String>,
    /// A model the server serves (`jetscribe` lists them at GET /models).
    #[arg(long)]
    model: Option<String>,
    /// Where the server posts the result.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Time every word.
    #[arg(long)]
    word_timestamps: bool,
    /// Follow each job to its end and write its result.
    #[arg(long)]
    wait: bool,
    /// The result's format, with --wait.
    #[arg(long, value_enum, default_value_t = Format::Txt, requires = "wait")]
    format: Format,
    /// Write the result here instead of to stdout (a folder, for several files), with --wait.
    #[arg(short, long, requires = "wait")]
    output: Option<PathBuf>,
}

/// The formats of `/result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Txt,
    Srt,
    Vtt,
    Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Json => "json",
        }
    }
}

/// Whether `args` (the program name first) are a client command: one of [`COMMANDS`], or the
/// client's own options before it.
pub fn is_client_command(args: &[OsString]) -> bool {
    let first = args.get(1).and_then(|arg| arg.to_str()).unwrap_or_default();
    COMMANDS.contains(&first) || first.starts_with("--url") || first.starts_with("--api-key")
}

/// Runs the client command in `args` (the program name first); clap answers `--help` and usage
/// errors itself (exit 2).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = ClientCli::parse_from(args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("jetscribe: cannot start the async runtime: {err}");
            return ExitCode::from(Exit::Unreachable as u8);
        }
    };
    let exit = runtime.block_on(run(cli)).unwrap_or_else(|err| {
        eprintln!("jetscribe: {}", err.message);
        err.exit
    });
    ExitCode::from(exit as u8)
}

async fn run(cli: ClientCli) -> Result<Exit, ClientError> {
    let api = Api::new(&cli.url, cli.api_key.as_deref())?;
    // Bars are drawn on stderr: shown when it is a terminal, even with stdout redirected.
    let bars = std::io::stderr().is_terminal();
    match cli.command {
        ClientCommand::Submit(args) => submit(&api, &args, bars).await,
        ClientCommand::Status { job_id } => print_json(&api.status(job_id).await?),
        ClientCommand::Result { job_id, format } => {
            print!("{}", api.result(job_id, format.name()).await?);
            Ok(Exit::Done)
        }
        ClientCommand::Watch { job_id } => {
            Ok(follow(&api, job_id, &board(bars), None).await?.exit())
        }
        ClientCommand::Jobs {
            limit,
            status,
            cursor,
        } => {
            let mut query = format!("/jobs?limit={limit}");
            for (name, value) in [("status", status), ("cursor", cursor)] {
                if let Some(value) = value {
                    query.push_str(&format!("&{name}={}", encode_query_value(&value)));
                }
            }
            print_jobs(&api.get_json(&query).await?);
            Ok(Exit::Done)
        }
        ClientCommand::Cancel { job_id } => print_json(&api.cancel(job_id).await?),
    }
}

fn print_json(body: &Value) -> Result<Exit, ClientError> {
    println!("{body:#}");
    Ok(Exit::Done)
}

/// A query value with everything but unreserved characters percent-encoded.
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// One line per job: id, status, progress, file name, created; then, on stderr, how to get the
/// next page.
fn print_jobs(page: &Value) {
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more: jetscribe jobs --cursor {cursor}");
    }
    for job in page["jobs"].as_array().into_iter().flatten() {
        let text = |key: &str| job[key].as_str().unwrap_or("-").to_owned();
        let progress = job["progress"].as_u64().unwrap_or(0);
        let (id, status, file, created) = (
            text("job_id"),
            text("status"),
            text("filename"),
            text("created_at"),
        );
        println!("{id}  {status:<10} {progress:>3}%  {created}  {file}");
    }
}

/// Uploads each file; prints its job id, or with --wait writes its result. A file that fails
/// does not stop the others; the worst exit wins.
async fn submit(api: &Api, args: &SubmitArgs, bars: bool) -> Result<Exit, ClientError> {
    let several = args.files.len() > 1;
    if several && let Some(folder) = &args.output {
        check_output_folder(folder, &args.files)?;
    }
    let mut worst = Exit::Done;
    let mut submitted = Vec::new();
    for file in &args.files {
        match upload(api, args, file, bars).await {
            Ok(job_id) if args.wait => {
                eprintln!("{}: job {job_id}", file.display());
                submitted.push((file.as_path(), job_id));
            }
            Ok(job_id) => println!("{job_id}"),
            Err(err) => worst = worst.max(failed(file, err)),
        }
    }
    // The jobs run side by side on the server: up to FOLLOWED_AT_ONCE are followed together,
    // a bar each (each holds one of the server's event streams, which other clients share),
    // the rest as those end. A result goes into its -o file as soon as its job ends, and to
    // stdout in the files' order.
    let board = &board(bars);
    let mut ends = futures::stream::iter(submitted)
        .map(|(file, job_id)| async move {
            let label = several.then(|| file_name(file));
            (
                file,
                see_through(api, args, board, file, job_id, label).await,
            )
        })
        .buffered(FOLLOWED_AT_ONCE);
    while let Some((file, end)) = ends.next().await {
        let exit = end.map(|(exit, for_stdout)| {
            if let Some(body) = for_stdout {
                print!("{body}");
            }
            exit
        });
        worst = worst.max(exit.unwrap_or_else(|err| failed(file, err)));
    }
    Ok(worst)
}

/// Jobs of one `submit --wait` followed at once.
const FOLLOWED_AT_ONCE: usize = 4;

/// Follows a job to its end and, when it completed, writes its result to `-o` (or returns it
/// for stdout); the exit it calls for.
async fn see_through(
    api: &Api,
    args: &SubmitArgs,
    board: &MultiProgress,
    file: &Path,
    job_id: Uuid,
    label: Option<String>,
) -> Result<(Exit, Option<String>), ClientError> {
    let end = follow(api, job_id, board, label).await?;
    if end != JobEnd::Completed {
        return Ok((end.exit(), None));
    }
    let body = api.result(job_id, args.format.name()).await?;
    match &args.output {
        Some(output) => {
            write_result(&result_path(output, args, file), &body)?;
            Ok((Exit::Done, None))
        }
        None => Ok((Exit::Done, Some(body))),
    }
}

/// Reports a file that failed; its exit code.
fn failed(file: &Path, err: ClientError) -> Exit {
    eprintln!("jetscribe: {}: {}", file.display(), err.message);
    err.exit
}

/// Uploads one file with a bar of the bytes sent; its job id.
async fn upload(
    api: &Api,
    args: &SubmitArgs,
    file: &Path,
    bars: bool,
) -> Result<Uuid, ClientError> {
    let bar = board(bars).add(bar(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    ));
    bar.set_message(file_name(file));
    let uploaded = api.submit(file, &options(args), &bar).await;
    bar.finish_and_clear();
    uploaded
}

/// With several files, `-o` is a folder (made if missing) where their results are named after
/// them: two files of one name would overwrite each other.
fn check_output_folder(folder: &Path, files: &[PathBuf]) -> Result<(), ClientError> {
    let usage = |why: String| ClientError::new(Exit::Usage, why);
    let mut names: Vec<String> = files.iter().map(|file| file_name(file)).collect();
    names.sort();
    if let Some(twice) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(usage(format!(
            "-o: two files are named {}; submit them apart",
            twice[0]
        )));
    }
    std::fs::create_dir_all(folder).map_err(|err| {
        usage(format!(
            "-o: cannot make the folder {}: {err}",
            folder.display()
        ))
    })
}

/// The form fields of `submit`'s options.
fn options(args: &SubmitArgs) -> Vec<(&'static str, String)> {
    let given = [
        ("language", args.language.clone()),
        ("model", args.model.clone()),
        ("webhook_url", args.webhook_url.clone()),
        (
            "word_timestamps",
            args.word_timestamps.then(|| "true".to_owned()),
        ),
    ];
    given
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
}

/// Where `-o` puts a job's result: `-o FILE`, or with several files `-o DIR/<file
/// name>.<format>`.
fn result_path(output: &Path, args: &SubmitArgs, file: &Path) -> PathBuf {
    match args.files.len() > 1 {
        true => output.join(format!("{}.{}", file_name(file), args.format.name())),
        false => output.to_owned(),
    }
}

/// Writes a job's result to `path`.
fn write_result(path: &Path, body: &str) -> Result<(), ClientError> {
    std::fs::write(path, body).map_err(|err| {
        ClientError::new(
            Exit::Usage,
            format!("cannot write {}: {err}", path.display()),
        )
    })
}

fn file_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || "upload".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Where bars are drawn: stderr, or nowhere when stderr is not a terminal.
fn board(visible: bool) -> MultiProgress {
    match visible {
        true => MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        false => MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
    }
}

/// A bar drawn with `template` (where its board draws).
fn bar(template: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Follows the job's events to its end, with a bar of its progress on `board` (or, without
/// bars, a line on stderr per stage), its lines starting with `label` when there are several.
async fn follow(
    api: &Api,
    job_id: Uuid,
    board: &MultiProgress,
    label: Option<String>,
) -> Result<JobEnd, ClientError> {
    let bar = board.add(bar("{msg} [{bar:30}] {pos}%"));
    bar.set_length(100);
    let prefix = label.map(|label| format!("{label}: ")).unwrap_or_default();
    let end = api
        .follow_events(job_id, |event| {
            bar.set_position(event["progress"].as_u64().unwrap_or(0));
            bar.set_message(format!("{prefix}{}", progress_line(event)));
            if board.is_hidden() && event["kind"] == "stage_started" {
                eprintln!("{prefix}{}", progress_line(event));
            }
        })
        .await;
    bar.finish_and_clear();
    let end = end?;
    if end != JobEnd::Completed {
        let status = api.status(job_id).await?;
        let state = status["status"].as_str().unwrap_or("ended");
        let why = status["error_message"]
            .as_str()
            .unwrap_or("no reason given");
        board.suspend(|| eprintln!("jetscribe: {prefix}job {job_id} {state}: {why}"));
    }
    Ok(end)
}

/// What a progress event says: the stage, the media time done of the total, the time left.
fn progress_line(event: &Value) -> String {
    // Between stages, the event's kind (submitted, completed …).
    let stage = event["stage"]
        .as_str()
        .or(event["kind"].as_str())
        .unwrap_or("queued");
    let mut line = stage.to_owned();
    // The media time done is the transcription's; other stages' progress is not in media time.
    let duration = event["duration_s"]
        .as_f64()
        .filter(|_| stage == "transcribe");
    if let Some(duration) = duration {
        let done = duration * event["progress"].as_f64().unwrap_or(0.0) / 100.0;
        line.push_str(&format!(" {} / {}", clock(done), clock(duration)));
    }
    if let Some(eta) = event["eta_s"].as_f64() {
        line.push_str(&format!(", {} left", clock(eta)));
    }
    line
}

/// Seconds as `h:mm:ss` or `m:ss`.
fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    let (hours, minutes, seconds) = (whole / 3600, whole / 60 % 60, whole % 60);
    match hours {
        0 => format!("{minutes}:{seconds:02}"),
        _ => format!("{hours}:{minutes:02}:{seconds:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_stage_media_time_and_time_left() {
        let cases = [
            (
                serde_json::json!({"stage": "decode", "progress": 0}),
                "decode",
            ),
            (
                serde_json::json!({"stage": "transcribe", "progress": 50, "duration_s": 7322.0, "eta_s": 65.0}),
                "transcribe 1:01:01 / 2:02:02, 1:05 left",
            ),
            (serde_json::json!({"progress": 0}), "queued"),
        ];
        for (event, line) in cases {
            assert_eq!(progress_line(&event), line, "{event}");
        }
    }

    #[test]
    fn the_worst_exit_of_several_jobs_wins() {
        assert_eq!(Exit::Done.max(Exit::JobFailed), Exit::JobFailed);
        assert_eq!(Exit::Unreachable.max(Exit::JobFailed), Exit::Unreachable);
    }

    #[test]
    fn client_commands_are_told_from_the_servers_parts() {
        let cases = [
            (&["jetscribe", "submit", "a.wav"][..], true),
            (&["jetscribe", "--url", "http://x", "jobs"][..], true),
            (&["jetscribe", "up"][..], false),
            (&["jetscribe", "transcriber"][..], false),
            (&["jetscribe"][..], false),
        ];
        for (args, client) in cases {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert_eq!(is_client_command(&args), client, "{args:?}");
        }
    }

    #[test]
    fn options_are_sent_only_when_given() {
        let args = SubmitArgs {
            files: vec![],
            language: Some("en".into()),
            model: None,
            webhook_url: None,
            word_timestamps: true,
            wait: false,
            format: Format::Txt,
            output: None,
        };
        assert_eq!(
            options(&args),
            vec![
                ("language", "en".to_owned()),
                ("word_timestamps", "true".to_owned())
            ]
        );
    }
}
