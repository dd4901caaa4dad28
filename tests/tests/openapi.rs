//! The OpenAPI document (`GET /openapi.json`) against the server that publishes it: it is a
//! valid OpenAPI 3 document (openapi-spec-validator, PyPI), every route the server answers is
//! in it with the status it answered and the query parameters it was sent, every JSON body
//! answered fits the schema the document gives, and every route in it was called. Swagger UI
//! (`/docs`) shows it.

use std::process::Command;

use jetscribe_tests::reference::pytools_python;
use jetscribe_tests::{TestApp, fixture};
use serde_json::{Value, json};

const KEY: &str = "openapi-key-0123456789";

/// Checks the document and each exchange against it; prints `{"problems": […], "checked": n}`.
const CHECK: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_schema_validator import OAS30Validator, oas30_format_checker

spec = json.load(open(sys.argv[1]))
exchanges = json.load(open(sys.argv[2]))
validate(spec)
schemas = spec["components"]["schemas"]

def inline(node):
    if isinstance(node, list):
        return [inline(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        merged = dict(inline(schemas[node["$ref"].rsplit("/", 1)[1]]))
        merged.update({k: inline(v) for k, v in node.items() if k != "$ref"})
        return merged
    node = {k: inline(v) for k, v in node.items()}
    # Closed: a field the server adds or renames without the schema is caught.
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node

problems, called = [], set()
for ex in exchanges:
    where = f'{ex["method"]} {ex["path"]} -> {ex["status"]}'
    operation = spec["paths"].get(ex["path"], {}).get(ex["method"].lower())
    if operation is None:
        problems.append(f"{where}: the route is not in the document")
        continue
    called.add((ex["path"], ex["method"].lower()))
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    for name in ex.get("query", []):
        if name not in declared:
            problems.append(f"{where}: the query parameter {name} is not in the document")
    response = operation["responses"].get(str(ex["status"]))
    if response is None:
        problems.append(f"{where}: the status is not in the document")
        continue
    content = response.get("content", {})
    media = ex["content_type"].split(";")[0].strip()
    if not content:
        if ex["length"] > 0:
            problems.append(f"{where}: a body where the document has none")
        continue
    if media not in content:
        problems.append(f"{where}: {media} is not among {sorted(content)}")
        continue
    if media == "application/json":
        validator = OAS30Validator(inline(content[media]["schema"]),
                                   format_checker=oas30_format_checker)
        for error in validator.iter_errors(ex["body"]):
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: body at /{path}: {error.message[:200]}")
for path, operations in spec["paths"].items():
    for method in operations:
        if (path, method) not in called:
            problems.append(f"{method.upper()} {path}: in the document, never called")
print(json.dumps({"problems": problems, "checked": len(exchanges)}))
"#;

/// The requests of the test and what came back.
struct Exchanges {
    app: TestApp,
    keyless: reqwest::Client,
    seen: Vec<Value>,
}

impl Exchanges {
    /// Sends `request`; records its answer under the route `template`; returns status and body.
    async fn send(&mut self, template: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let request = request.build().expect("a request");
        let method = request.method().to_string();
        let query: Vec<String> = (request.url().query_pairs())
            .map(|(name, _)| name.into_owned())
            .collect();
        let response = self.app.http.execute(request).await.expect("an answer");
        let answer = self.record(&method, template, response).await;
        if let Some(exchange) = self.seen.last_mut() {
            exchange["query"] = json!(query);
        }
        answer
    }

    async fn record(
        &mut self,
        method: &str,
        template: &str,
        response: reqwest::Response,
    ) -> (u16, Value) {
        let status = response.status().as_u16();
        let content_type = (response.headers().get("content-type"))
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.expect("the body");
        let body = match content_type.starts_with("application/json") {
            true => serde_json::from_slice(&bytes).expect("JSON as labelled"),
            false => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        self.seen.push(json!({
            "method": method, "path": template, "status": status,
            "content_type": content_type, "length": bytes.len(), "body": body,
        }));
        (status, body)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.app.http.get(self.app.url(path))
    }

    fn upload(&self, path: &str, file: &str, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        let bytes = std::fs::read(fixture(file)).expect("the fixture");
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file.to_owned());
        self.app
            .http
            .post(self.app.url(path))
            .multipart(form.part("file", part))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_holds_every_route_and_answer_of_the_server() {
    let keys = format!("client={KEY}");
    let mut app = TestApp::spawn(&[("API_KEYS", &keys), ("WHISPER_BATCH_SIZE", "1")]).await;
    app.set_api_key(Some(KEY));
    let keyless = reqwest::Client::new();
    let mut calls = Exchanges {
        app,
        keyless,
        seen: Vec::new(),
    };
    call_the_job_routes(&mut calls).await;
    call_the_openai_and_service_routes(&mut calls).await;

    // Without a key: the document, Swagger UI and /health answer; the API does not.
    let document = calls
        .keyless
        .get(calls.app.url("/openapi.json"))
        .send()
        .await;
    let document: Value = document.expect("answers").json().await.expect("JSON");
    let docs = calls
        .keyless
        .get(calls.app.url("/docs"))
        .send()
        .await
        .expect("answers");
    assert_eq!(docs.status(), 200);
    let docs = docs.text().await.expect("HTML");
    // Swagger UI holds the served document, with its keys.
    assert!(docs.contains("SwaggerUIBundle"), "not Swagger UI");
    assert!(docs.contains("\"X-API-Key\""), "Swagger UI lacks the keys");
    for (template, path, status) in [
        ("/health", "/health", 200),
        ("/jobs", "/jobs", 401),
        ("/v1/models", "/v1/models", 401),
    ] {
        let response = calls
            .keyless
            .get(calls.app.url(path))
            .send()
            .await
            .expect("answers");
        let (answered, body) = calls.record("GET", template, response).await;
        assert_eq!(answered, status, "{path}: {body}");
    }
    // poem's own refusals are JSON too, and name no internals.
    let (status, body) = calls.app.get_json("/no-such-route").await;
    assert_eq!((status, body["detail"].is_string()), (404, true), "{body}");
    let (status, body) = calls.app.get_json("/jobs/%FF").await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().expect("a JSON refusal");
    assert!(!detail.contains("param0"), "{detail}");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let (spec, exchanges) = (
        dir.path().join("openapi.json"),
        dir.path().join("calls.json"),
    );
    std::fs::write(&spec, document.to_string()).expect("written");
    std::fs::write(&exchanges, Value::from(calls.seen).to_string()).expect("written");
    let output = Command::new(pytools_python())
        .args(["-c", CHECK])
        .args([&spec, &exchanges])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the document is not valid: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the check's JSON");
    println!("{report:#}");
    assert_eq!(report["problems"], json!([]), "{report:#}");
}

/// Every route of jobs, each answering as it does to clients and to mistakes.
async fn call_the_job_routes(calls: &mut Exchanges) {
    let (status, accepted) = calls
        .send("/process", calls.upload("/process", "jfk.flac", &[]))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().expect("job_id").to_owned();
    let replayed = calls
        .upload("/process", "jfk.flac", &[])
        .header("Idempotency-Key", "k1");
    assert_eq!(calls.send("/process", replayed).await.0, 202);
    let replayed = calls
        .upload("/process", "jfk.flac", &[])
        .header("Idempotency-Key", "k1");
    assert_eq!(calls.send("/process", replayed).await.0, 200);
    let no_file = calls
        .app
        .http
        .post(calls.app.url("/process"))
        .multipart(reqwest::multipart::Form::new().text("language", "en"));
    assert_eq!(calls.send("/process", no_file).await.0, 400);
    let bad_language = calls.upload("/process", "jfk.flac", &[("language", "xx-not")]);
    assert_eq!(calls.send("/process", bad_language).await.0, 422);

    // A long job: running (202), cancelled (200), then gone (410).
    let (_, long) = calls
        .send("/process", calls.upload("/process", "voxpopuli.ogg", &[]))
        .await;
    let long_id = long["job_id"].as_str().expect("job_id").to_owned();
    calls
        .send("/result/{job_id}", calls.get(&format!("/result/{long_id}")))
        .await;
    let cancel = calls
        .app
        .http
        .delete(calls.app.url(&format!("/jobs/{long_id}")));
    assert_eq!(calls.send("/jobs/{job_id}", cancel).await.0, 200);
    let gone = calls.get(&format!("/result/{long_id}"));
    assert_eq!(calls.send("/result/{job_id}", gone).await.0, 410);

    calls.app.wait_until_ended(&job_id).await;
    for format in ["", "?format=srt", "?format=vtt", "?format=txt"] {
        let result = calls.get(&format!("/result/{job_id}{format}"));
        assert_eq!(calls.send("/result/{job_id}", result).await.0, 200);
    }
    let bad_format = calls.get(&format!("/result/{job_id}?format=doc"));
    assert_eq!(calls.send("/result/{job_id}", bad_format).await.0, 400);
    for (path, status) in [
        (format!("/status/{job_id}"), 200),
        ("/status/x".into(), 400),
    ] {
        assert_eq!(
            calls.send("/status/{job_id}", calls.get(&path)).await.0,
            status
        );
    }
    let unknown = format!("/status/{}", uuid::Uuid::new_v4());
    assert_eq!(
        calls.send("/status/{job_id}", calls.get(&unknown)).await.0,
        404
    );
    let (_, events) = calls
        .send("/events/{job_id}", calls.get(&format!("/events/{job_id}")))
        .await;
    let last_id = (events.as_str().expect("text").lines())
        .rev()
        .find_map(|line| line.strip_prefix("id:"))
        .expect("events have ids")
        .trim()
        .to_owned();
    let resumed = calls
        .get(&format!("/events/{job_id}"))
        .header("Last-Event-ID", last_id);
    assert_eq!(calls.send("/events/{job_id}", resumed).await.0, 204);
    for (template, path, status) in [
        ("/jobs", "/jobs".to_owned(), 200),
        ("/jobs", "/jobs?limit=0".into(), 400),
        ("/jobs/processing", "/jobs/processing".into(), 200),
        ("/jobs/{job_id}", format!("/jobs/{job_id}"), 200),
    ] {
        assert_eq!(
            calls.send(template, calls.get(&path)).await.0,
            status,
            "{path}"
        );
    }
    let completed = calls
        .app
        .http
        .delete(calls.app.url(&format!("/jobs/{job_id}")));
    assert_eq!(calls.send("/jobs/{job_id}", completed).await.0, 409);
    // The original service's options in the query string.
    for route in ["/process-audio", "/process-video"] {
        let with_options = format!("{route}?language=en&word_timestamps=true&beam_size=2");
        let (status, body) = calls
            .send(route, calls.upload(&with_options, "jfk.flac", &[]))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// OpenAI's routes, the models, the metrics and the health check.
async fn call_the_openai_and_service_routes(calls: &mut Exchanges) {
    let transcriptions = "/v1/audio/transcriptions";
    for (fields, status) in [
        (&[][..], 200),
        (
            &[
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "word"),
            ],
            200,
        ),
        (&[("response_format", "srt")], 200),
        (&[("response_format", "doc")], 400),
    ] {
        let request = calls.upload(transcriptions, "jfk.flac", fields);
        assert_eq!(
            calls.send(transcriptions, request).await.0,
            status,
            "{fields:?}"
        );
    }
    let translation = calls.upload("/v1/audio/translations", "jfk.flac", &[]);
    assert_eq!(
        calls.send("/v1/audio/translations", translation).await.0,
        200
    );
    for (template, path, status) in [
        ("/v1/models", "/v1/models", 200),
        ("/v1/models/{model}", "/v1/models/whisper-1", 200),
        ("/v1/models/{model}", "/v1/models/no-such-model", 404),
        ("/models", "/models", 200),
        ("/metrics", "/metrics", 200),
        ("/health", "/health", 200),
    ] {
        assert_eq!(
            calls.send(template, calls.get(path)).await.0,
            status,
            "{path}"
        );
    }
}
