//! Prometheus metrics, read as Prometheus reads them (its reference parser of the text
//! format): what a job leaves in them, `/metrics` behind the API's keys, and METRICS_ADDR
//! serving them alone.

use std::time::Duration;

use jetscribe_tests::ports::free_ports;
use jetscribe_tests::prometheus::Scrape;
use jetscribe_tests::{TestApp, WebhookReceiver, fixture, wait_for};

const KEY: &str = "metrics-test-key-0123456789";

async fn scrape(app: &TestApp, url: &str) -> Scrape {
    let response = app.http.get(url).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    Scrape::parse(&response.text().await.expect("text"))
}

#[tokio::test]
async fn a_job_shows_in_the_metrics_of_every_stage_as_prometheus_reads_them() {
    let metrics_addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut app = TestApp::spawn(&[
        ("API_KEYS", &format!("ops={KEY}")),
        ("METRICS_ADDR", &metrics_addr),
        // The janitor counts jobs by state at each sweep: every 4 s.
        ("JOB_ACK_WAIT", "4"),
    ])
    .await;
    let api_metrics = app.url("/metrics");
    let refused = app.http.get(&api_metrics).send().await.expect("GET");
    assert_eq!(refused.status(), 401, "the API's /metrics needs a key");
    app.set_api_key(Some(KEY));

    let mut hook = WebhookReceiver::start().await;
    let jfk = fixture("jfk.flac");
    let size = std::fs::metadata(&jfk).expect("fixture").len() as f64;
    let job_id = app
        .submit_job(&jfk, &format!("?webhook_url={}", hook.url))
        .await;
    let status = app.wait_until_ended(&job_id).await;
    assert_eq!(status["status"], "completed", "{status}");
    hook.next(Duration::from_secs(60)).await;

    let metrics = wait_for(
        "the janitor's count of completed jobs",
        Duration::from_secs(60),
        || {
            let app = &app;
            let url = api_metrics.clone();
            async move {
                let metrics = scrape(app, &url).await;
                let done = metrics.value("jetscribe_jobs", &[("state", "completed")]) == Some(1.0);
                done.then_some(metrics)
            }
        },
    )
    .await;
    for (name, kind, unit) in [
        ("jetscribe_jobs", "gauge", ""),
        ("jetscribe_jobs_submitted", "counter", ""),
        ("jetscribe_uploaded_bytes", "counter", "bytes"),
        ("jetscribe_stage_duration_seconds", "histogram", "seconds"),
        ("jetscribe_stage_tries_running", "gauge", ""),
        ("jetscribe_queue_messages", "gauge", ""),
        ("jetscribe_queue_in_progress", "gauge", ""),
        ("jetscribe_queue_idle_workers", "gauge", ""),
        ("jetscribe_transcribe_real_time_factor", "histogram", ""),
        ("jetscribe_transcribed_media_seconds", "counter", "seconds"),
        ("jetscribe_webhook_attempts", "counter", ""),
        ("jetscribe_nats_reconnects", "counter", ""),
    ] {
        let family = metrics
            .family(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            (family.kind.as_str(), family.unit.as_str()),
            (kind, unit),
            "{name}"
        );
    }
    let value = |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels);
    assert_eq!(
        value("jetscribe_jobs", &[("state", "processing")]),
        Some(0.0)
    );
    assert_eq!(value("jetscribe_jobs_submitted_total", &[]), Some(1.0));
    assert_eq!(value("jetscribe_uploaded_bytes_total", &[]), Some(size));
    for stage in ["decode", "transcribe", "analyze", "notify"] {
        let tries = value(
            "jetscribe_stage_duration_seconds_count",
            &[("stage", stage)],
        );
        assert_eq!(tries, Some(1.0), "one try of {stage}");
        let running = value("jetscribe_stage_tries_running", &[("stage", stage)]);
        assert_eq!(running, Some(0.0), "{stage}");
        let waiting = value("jetscribe_queue_messages", &[("stage", stage)]);
        assert_eq!(waiting, Some(0.0), "{stage}'s queue");
    }
    let forwarded = [("stage", "transcribe"), ("outcome", "forwarded")];
    let took = value("jetscribe_stage_duration_seconds_sum", &forwarded).expect("observed");
    assert!(took > 0.1, "the transcription took {took} s");
    let idle = value(
        "jetscribe_queue_idle_workers",
        &[("stage", "transcribe"), ("model", "base")],
    );
    assert!(
        idle.is_some_and(|idle| idle >= 1.0),
        "a transcriber waits: {idle:?}"
    );
    let media = value(
        "jetscribe_transcribed_media_seconds_total",
        &[("model", "base")],
    );
    assert_eq!(media, Some(11.0));
    let factor = value(
        "jetscribe_transcribe_real_time_factor_sum",
        &[("model", "base")],
    );
    assert!(
        factor.is_some_and(|f| f > 0.0 && f < 3.0),
        "real-time factor {factor:?}"
    );
    let delivered = value(
        "jetscribe_webhook_attempts_total",
        &[("outcome", "delivered")],
    );
    assert_eq!(delivered, Some(1.0));
    assert_eq!(value("jetscribe_nats_reconnects_total", &[]), Some(0.0));

    // METRICS_ADDR: the same metrics alone, without a key, for a scraper on the cluster's
    // network (every stage process can serve it).
    let unauthenticated = reqwest::Client::new();
    let text = unauthenticated
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("GET METRICS_ADDR")
        .text()
        .await
        .expect("text");
    let alone = Scrape::parse(&text);
    assert_eq!(
        alone.value("jetscribe_jobs_submitted_total", &[]),
        Some(1.0)
    );

    // A NATS server restarted under the process: the reconnect is counted.
    app.restart_nats();
    wait_for("the reconnect counted", Duration::from_secs(60), || {
        let app = &app;
        let url = api_metrics.clone();
        async move {
            let response = app.http.get(&url).send().await.ok()?;
            let metrics = Scrape::parse(&response.text().await.ok()?);
            let reconnects = metrics.value("jetscribe_nats_reconnects_total", &[])?;
            (reconnects >= 1.0).then_some(())
        }
    })
    .await;
    app.terminate(Duration::from_secs(30));
}
