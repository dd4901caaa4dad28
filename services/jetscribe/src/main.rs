//! `jetscribe <up|api|decoder|transcriber|analyzer|notifier>`: reads the environment, installs
//! logging, stops cleanly on SIGTERM or Ctrl-C. `jetscribe <submit|status|result|watch|jobs|
//! cancel>`: the client of a running server ([`jetscribe::client`]).

use std::process::ExitCode;

use jetscribe::parts::PARTS;
use jetscribe::{Command, Settings, run, telemetry};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The usage text, with a line per part.
fn usage() -> String {
    let names: Vec<&str> = PARTS.iter().map(|part| part.name).collect();
    let mut usage = format!("usage: jetscribe <up|{}>\n", names.join("|"));
    let up = "every part in one process (starts nats-server if NATS_URL is unset)";
    usage.push_str(&format!("  {:<12} {up}\n", "up"));
    for part in PARTS {
        usage.push_str(&format!("  {:<12} {} only\n", part.name, part.about));
    }
    usage.push_str("Start more processes of a part to scale it.\n");
    usage.push_str(&format!(
        "Client of a running server (JETSCRIBE_URL): jetscribe <{}> --help\n",
        jetscribe::client::COMMANDS.join("|")
    ));
    usage.push_str("Configuration comes from the environment; see README.md.");
    usage
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut term, mut int) = match (term, int) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            return tracing::error!(error = %err, "cannot watch for SIGTERM; stop with SIGKILL");
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

fn main() -> ExitCode {
    let all: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if jetscribe::client::is_client_command(&all) {
        return jetscribe::client::main(all);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.as_slice() {
        [name] => match Command::parse(name) {
            Some(command) => command,
            None => {
                eprintln!("unknown command {name:?}\n{}", usage());
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let checked = Settings::from_env().and_then(|settings| {
        if command.runs_api() {
            settings.check_exposure()?;
        }
        Ok(settings)
    });
    let settings = match checked {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("jetscribe: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("jetscribe: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let service = format!("jetscribe-{}", command.name());
        let _telemetry = match telemetry::init(&settings, &service) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("jetscribe: {err:#}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match run(command, settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "jetscribe failed");
                eprintln!("jetscribe: {err:#}");
                ExitCode::FAILURE
            }
        }
    })
}
