//! `jetscribe <up|api|decoder|transcriber|analyzer|notifier>`: reads the environment, installs
//! logging, stops cleanly on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use jetscribe::{Command, Settings, run, telemetry};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: jetscribe <up|api|decoder|transcriber|analyzer|notifier>
  up           the HTTP API and every stage in one process (starts nats-server if NATS_URL is unset)
  api          the HTTP API only
  decoder | transcriber | analyzer | notifier   one stage (start more processes to scale it)
Configuration comes from the environment; see README.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.as_slice() {
        [name] => match Command::parse(name) {
            Some(command) => command,
            None => {
                eprintln!("unknown command {name:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env() {
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
        let _telemetry = match telemetry::init(&settings, &format!("jetscribe-{}", args[0])) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("jetscribe: {err:#}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown requested");
            on_signal.cancel();
        });
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
