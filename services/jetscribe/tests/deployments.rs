//! What a deployment runs. `compose.yaml` must parse, start only parts the binary has, set only
//! variables something in the container reads, and give each NATS node every variable the
//! cluster config (`nats/cluster/nats.conf`) asks for. `deploy/kubernetes/` must be valid
//! against the Kubernetes and KEDA schemas (an offline validator from npm), run every part, set
//! only variables something reads, and scale each stage on its own queue's consumer.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use jetscribe::Settings;
use proto_msgs::{Queue, Stage};
use serde::Deserialize as _;
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

/// The stage each stage part runs.
const STAGE_PARTS: [(&str, Stage); 4] = [
    ("decoder", Stage::Decode),
    ("transcriber", Stage::Transcribe),
    ("analyzer", Stage::Analyze),
    ("notifier", Stage::Notify),
];

/// Every document of the manifests `deploy/kubernetes/kustomization.yaml` lists.
fn kubernetes_manifests() -> Vec<Value> {
    let dir = repo_file("deploy/kubernetes");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization");
    let kustomization: Value = serde_norway::from_str(&text).expect("kustomization parses");
    let files = kustomization["resources"].as_sequence().expect("resources");
    let mut manifests = Vec::new();
    for file in files {
        let file = file.as_str().expect("a file name");
        let text = std::fs::read_to_string(dir.join(file)).expect("a listed manifest");
        for document in serde_norway::Deserializer::from_str(&text) {
            manifests.push(Value::deserialize(document).expect("a YAML document"));
        }
    }
    manifests
}

/// The variables a container sets: its `env` names, and the data of the ConfigMaps it reads.
fn container_environment(container: &Value, config_maps: &[&Value]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        let Some(name) = source["configMapRef"]["name"].as_str() else {
            continue;
        };
        let map = config_maps
            .iter()
            .find(|map| map["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        for (key, value) in map["data"].as_mapping().expect("data") {
            env.push((
                key.as_str().expect("key").into(),
                value.as_str().expect("text").into(),
            ));
        }
    }
    for variable in container["env"].as_sequence().into_iter().flatten() {
        let name = variable["name"].as_str().expect("a name");
        let value = variable["value"].as_str().unwrap_or_default();
        env.retain(|(key, _)| key != name);
        env.push((name.to_owned(), value.to_owned()));
    }
    env
}

/// The consumer the pods of Deployment `name`, running `stage` with `env`, take jobs from.
fn consumer_of(name: &str, stage: Stage, env: &[(String, String)]) -> String {
    let settings = Settings::from_lookup(|wanted| {
        env.iter()
            .find(|(key, _)| key == wanted)
            .map(|(_, value)| value.clone())
    })
    .unwrap_or_else(|err| panic!("{name}: {err}"));
    // One pool per Deployment: its ScaledObject watches that pool's queue alone.
    let [model] = settings.whisper_models.as_slice() else {
        panic!("{name}: one model per Deployment");
    };
    Queue::for_message(stage, Some(&model.name), &model.name).consumer_name()
}

#[test]
fn kubernetes_runs_every_part_and_scales_each_stage_on_its_own_queue() {
    let manifests = kubernetes_manifests();
    let of_kind = |kind: &str| -> Vec<&Value> {
        manifests
            .iter()
            .filter(|m| m["kind"].as_str() == Some(kind))
            .collect()
    };
    let config_maps = of_kind("ConfigMap");
    let read = variables_the_binary_reads();
    // Each Deployment's part, and the queue its pods consume.
    let mut queues = std::collections::BTreeMap::new();
    let mut parts_run = BTreeSet::new();
    for deployment in of_kind("Deployment") {
        let name = deployment["metadata"]["name"].as_str().expect("a name");
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers");
        let container = &containers[0];
        let part = container["args"][0].as_str().expect("a part to run");
        assert!(
            jetscribe::parts::part(part).is_some(),
            "{name}: no part {part}"
        );
        parts_run.insert(part.to_owned());
        let env = container_environment(container, &config_maps);
        for (variable, _) in &env {
            assert!(
                read.contains(variable) || read_by_libraries(variable),
                "{name} sets {variable}, which nothing in jetscribe reads"
            );
        }
        if let Some((_, stage)) = STAGE_PARTS.iter().find(|(p, _)| *p == part) {
            let consumer = consumer_of(name, *stage, &env);
            queues.insert(name.to_owned(), (part.to_owned(), consumer));
        }
    }
    let every_part: BTreeSet<String> = ["api", "decoder", "transcriber", "analyzer", "notifier"]
        .map(str::to_owned)
        .into();
    assert_eq!(parts_run, every_part, "a Deployment per part");

    let mut scaled = BTreeSet::new();
    for scaler in of_kind("ScaledObject") {
        let spec = &scaler["spec"];
        let target = spec["scaleTargetRef"]["name"].as_str().expect("a target");
        let (part, consumer) = queues
            .get(target)
            .unwrap_or_else(|| panic!("{target}: no stage Deployment of that name"));
        let trigger = &spec["triggers"][0];
        assert_eq!(trigger["type"], "nats-jetstream", "{target}");
        let metadata = &trigger["metadata"];
        assert_eq!(metadata["stream"], proto_msgs::PIPELINE_STREAM, "{target}");
        assert_eq!(
            metadata["consumer"].as_str(),
            Some(consumer.as_str()),
            "{target}"
        );
        let min = spec["minReplicaCount"].as_u64().expect("minReplicaCount");
        if part == "transcriber" {
            assert_eq!(min, 0, "the transcriber scales to zero on an empty queue");
        }
        scaled.insert(part.clone());
    }
    let stages: BTreeSet<String> = STAGE_PARTS.map(|(part, _)| part.to_owned()).into();
    assert_eq!(scaled, stages, "a ScaledObject per stage");
    let services = of_kind("Service");
    assert!(
        services
            .iter()
            .any(|s| s["metadata"]["name"] == "jetscribe-api"),
        "the API's Service"
    );
}

#[test]
fn kubernetes_manifests_are_valid_against_the_kubernetes_and_keda_schemas() {
    let tools = repo_file("vendor/node/node_modules/kubernetes-models");
    assert!(
        tools.is_dir(),
        "{} is missing: run `make nodetools`",
        tools.display()
    );
    let dir = repo_file("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    let output = std::process::Command::new("node")
        .arg(repo_file("scripts/validate-kubernetes.mjs"))
        .args(&files)
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "invalid manifests:\n{report}");
    let valid = report
        .lines()
        .filter(|line| line.ends_with(": valid"))
        .count();
    assert!(valid >= 12, "every document checked:\n{report}");
}
