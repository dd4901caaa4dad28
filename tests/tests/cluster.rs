//! A deployment on a three-node NATS cluster (the config in `nats/cluster/`, a current
//! nats-server): every stream and bucket kept on all three nodes, and a job that completes while
//! the node leading the work stream is killed, with no process restarted.

use std::time::{Duration, Instant};

use jetscribe_nats::{Pipeline, PipelineSettings};
use jetscribe_tests::media::speech_every;
use jetscribe_tests::{JOB_TIMEOUT, NatsCluster, TestApp, wait_for, word_error_rate};

/// The streams of the pipeline, the buckets' among them.
const STREAMS: [&str; 6] = [
    proto_msgs::PIPELINE_STREAM,
    proto_msgs::EVENTS_STREAM,
    proto_msgs::SUBMISSIONS_STREAM,
    proto_msgs::DEAD_LETTER_STREAM,
    "KV_jetscribe_jobs",
    "KV_jetscribe_idempotency",
];

/// The node leading `stream` now, and how many nodes hold it.
async fn leader_of(pipeline: &Pipeline, stream: &str) -> Option<(String, usize)> {
    let mut stream = pipeline.jetstream().get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    let cluster = info.cluster.clone()?;
    Some((cluster.leader?, info.config.num_replicas))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_while_the_node_leading_the_work_stream_is_killed() {
    let mut cluster = NatsCluster::start(3).await;
    let servers = cluster.urls();
    let parts = ["api", "decoder", "transcriber", "analyzer", "notifier"];
    let env = [
        ("NATS_URL", servers.as_str()),
        ("NATS_REPLICAS", "3"),
        ("JOB_ACK_WAIT", "5"),
    ];
    let app = TestApp::spawn_parts(&parts, &env).await;
    let mut settings = PipelineSettings::new(servers.clone());
    settings.replicas = Some(3);
    let pipeline = Pipeline::connect(settings)
        .await
        .expect("the cluster answers");
    for stream in STREAMS {
        let (leader, replicas) = leader_of(&pipeline, stream).await.expect("a led stream");
        assert_eq!(replicas, 3, "{stream}");
        assert!(cluster.names().contains(&leader), "{stream}: {leader}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("two-minutes.wav");
    let speech = speech_every(&media, 120, 15);
    let job_id = app.submit_job(&media, "").await;
    wait_for(
        "the job to be transcribed",
        Duration::from_secs(120),
        || {
            let (app, job_id) = (&app, &job_id);
            async move {
                let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
                (status["step"] == "transcribing").then_some(())
            }
        },
    )
    .await;
    let (leader, _) = leader_of(&pipeline, proto_msgs::PIPELINE_STREAM)
        .await
        .expect("a leader");
    let killed = Instant::now();
    cluster.kill(&leader);
    let new_leader = wait_for("a new leader", Duration::from_secs(60), || {
        let (pipeline, leader) = (&pipeline, &leader);
        async move {
            let (now, _) = leader_of(pipeline, proto_msgs::PIPELINE_STREAM).await?;
            (now != *leader).then_some(now)
        }
    })
    .await;
    let elected_after = killed.elapsed();

    let (ended, _) = app.follow_status_for(&job_id, JOB_TIMEOUT).await;
    let completed_after = killed.elapsed();
    assert_eq!(ended["status"], "completed", "{ended}");
    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    let transcript = result["result"]["transcript"].as_str().unwrap_or_default();
    let wer = word_error_rate(&speech.reference, transcript);
    assert!(wer < 0.15, "WER {wer:.3}: {transcript}");
    let mut app = app;
    assert_eq!(
        app.exited_parts(),
        Vec::<String>::new(),
        "every process carried on without a restart"
    );
    eprintln!(
        "\n| killed | new leader | elected after | job completed after the kill |\n|---|---|---|---|\n| {leader} | {new_leader} | {:.1} s | {:.1} s |\n",
        elected_after.as_secs_f64(),
        completed_after.as_secs_f64()
    );
}
