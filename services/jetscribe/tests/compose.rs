//! `compose.yaml` is what a deployment runs: it must parse, start only parts the binary has,
//! set only variables something in the container reads, and give each NATS node every variable
//! the cluster config (`nats/cluster/nats.conf`) asks for.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use jetscribe::Settings;
use serde_norway::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Every variable [`Settings`] reads: what it asks its lookup for.
fn variables_the_binary_reads() -> BTreeSet<String> {
    let asked = Mutex::new(BTreeSet::new());
    // With nothing set, every variable is asked for once (defaults everywhere).
    let settings = Settings::from_lookup(|name| {
        asked.lock().expect("not poisoned").insert(name.to_owned());
        None
    });
    assert!(settings.is_ok(), "{settings:?}");
    asked.into_inner().expect("not poisoned")
}

/// Read by the libraries the binary uses, not by its settings: object_store's S3 client (the
/// AWS_* it documents), tracing's filter, and the OTLP exporter.
fn read_by_libraries(variable: &str) -> bool {
    const AWS: [&str; 6] = [
        "AWS_ENDPOINT",
        "AWS_ALLOW_HTTP",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
    ];
    AWS.contains(&variable) || variable == "RUST_LOG" || variable.starts_with("OTEL_")
}

fn environment(service: &Value) -> BTreeSet<String> {
    service["environment"]
        .as_mapping()
        .map(|env| {
            env.keys()
                .filter_map(|key| key.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_real_parts_with_variables_that_something_reads() {
    let text = std::fs::read_to_string(repo_file("compose.yaml")).expect("compose.yaml");
    let mut compose: Value = serde_norway::from_str(&text).expect("compose.yaml parses");
    compose.apply_merge().expect("merge keys resolve");
    let services = compose["services"].as_mapping().expect("services");
    let read = variables_the_binary_reads();
    let nats_config =
        std::fs::read_to_string(repo_file("nats/cluster/nats.conf")).expect("nats.conf");
    let mut parts_run = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().expect("a service name");
        let env = environment(service);
        if service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("jetscribe"))
        {
            let command = service["command"][0].as_str().expect("a part to run");
            assert!(
                jetscribe::parts::part(command).is_some(),
                "{name}: no part {command}"
            );
            parts_run.insert(command.to_owned());
            for variable in &env {
                assert!(
                    read.contains(variable) || read_by_libraries(variable),
                    "{name} sets {variable}, which nothing in jetscribe reads"
                );
            }
        } else if service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("nats"))
        {
            for variable in nats_config
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .filter_map(|word| word.strip_prefix('$'))
            {
                assert!(env.contains(variable), "{name} does not set {variable}");
            }
        }
    }
    let every_part: BTreeSet<String> = ["api", "decoder", "transcriber", "analyzer", "notifier"]
        .map(str::to_owned)
        .into();
    assert_eq!(parts_run, every_part, "one service per part");
    assert!(read.contains("NATS_REPLICAS") && read.contains("SHUTDOWN_GRACE"));
}
