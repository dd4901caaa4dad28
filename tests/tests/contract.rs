//! The wire contract and the job store, against a real nats-server.

use std::collections::BTreeMap;
use std::time::Duration;

use jetscribe_nats::{Pipeline, PipelineSettings};
use jetscribe_tests::private_pipeline;
use proto_msgs::{
    AnalyzeRequest, Channels, DecodeRequest, DecodingRequest, EventKind, JobEvent, JobOptions,
    JobRecord, JobStatus, ModelName, NotifyRequest, Stage, Task, TranscribeRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = proto_msgs::encode(value).expect("encodes");
    let back: T = proto_msgs::decode(&bytes).expect("decodes");
    assert_eq!(&back, value);
    // Named maps: another language sees field names, not positions.
    let named: Result<BTreeMap<String, serde::de::IgnoredAny>, _> = rmp_serde::from_slice(&bytes);
    assert!(
        named.is_ok(),
        "{} is not a map of named fields",
        std::any::type_name::<T>()
    );
}

fn sample_record(job_id: Uuid) -> JobRecord {
    JobRecord::new_pending(
        job_id,
        "talk.mp4".into(),
        1234,
        JobOptions {
            language: Some("de".into()),
            webhook_url: Some("https://example.org/hook".into()),
            word_timestamps: true,
            model: Some(ModelName::parse("tiny.en").expect("a valid name")),
            decoding: DecodingRequest {
                prompt: Some("Kowloon, Hongkong.".into()),
                hotwords: Some("Kowloon".into()),
                task: Task::Translate,
                temperature: Some(0.2),
                beam_size: Some(3),
            },
            channels: Channels::Split,
        },
        OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid"),
    )
}

#[test]
fn every_message_survives_a_round_trip_as_a_named_map() {
    let job_id = Uuid::now_v7();
    round_trip(&DecodeRequest {
        job_id,
        input_blob: "jobs/x/input".into(),
        filename: "a.wav".into(),
        channels: Channels::Split,
    });
    round_trip(&TranscribeRequest {
        job_id,
        audio_blob: "jobs/x/audio.ch0.s16le".into(),
        channel_blobs: vec![
            "jobs/x/audio.ch0.s16le".into(),
            "jobs/x/audio.ch1.s16le".into(),
        ],
        duration_s: 11.0,
        language: None,
        word_timestamps: true,
        model: Some(ModelName::parse("large-v3").expect("a valid name")),
        decoding: DecodingRequest {
            task: Task::Translate,
            ..Default::default()
        },
    });
    round_trip(&AnalyzeRequest {
        job_id,
        transcript_blob: "jobs/x/transcript.json".into(),
    });
    round_trip(&NotifyRequest::first(job_id));
    round_trip(&NotifyRequest {
        job_id,
        attempt: 3,
        not_before: Some(
            OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("valid"),
        ),
    });
    round_trip(&sample_record(job_id));
    round_trip(&JobEvent {
        job_id,
        kind: EventKind::StageStarted,
        status: JobStatus::Processing,
        progress: 15,
        at: OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid"),
        stage: Some(Stage::Transcribe),
        error_message: None,
        eta_s: Some(12.0),
        duration_s: Some(60.0),
    });
}

#[test]
fn an_event_is_readable_by_field_name() {
    let event = JobEvent {
        job_id: Uuid::nil(),
        kind: EventKind::Completed,
        status: JobStatus::Completed,
        progress: 100,
        at: OffsetDateTime::UNIX_EPOCH,
        stage: None,
        error_message: None,
        eta_s: None,
        duration_s: None,
    };
    let bytes = proto_msgs::encode(&event).expect("encodes");
    let map: BTreeMap<String, serde_json::Value> =
        rmp_serde::from_slice(&bytes).expect("a map of named fields");
    assert_eq!(map["kind"], "completed");
    assert_eq!(map["status"], "completed");
    assert_eq!(map["progress"], 100);
    assert_eq!(map["at"], "1970-01-01T00:00:00Z");
}

#[tokio::test]
async fn concurrent_compare_and_set_writers_lose_no_update() {
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    let job_id = Uuid::now_v7();
    pipeline
        .jobs()
        .create(&sample_record(job_id))
        .await
        .expect("created");

    const WRITERS: u32 = 8;
    const UPDATES: u32 = 25;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let jobs = pipeline.jobs().clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..UPDATES {
                jobs.update(job_id, |record| {
                    record.stage_run(Stage::Transcribe).attempts += 1;
                    let own = record.stage_run(Stage::Analyze);
                    own.attempts = own.attempts.max(writer);
                })
                .await
                .expect("update");
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("writers finish")
            .expect("writer ok");
    }
    let record = pipeline
        .jobs()
        .get(job_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        record.stages[&Stage::Transcribe].attempts,
        WRITERS * UPDATES
    );
    assert_eq!(record.stages[&Stage::Analyze].attempts, WRITERS - 1);
}

#[tokio::test]
async fn creating_a_job_twice_is_refused_and_setup_is_idempotent() {
    let (server, first) = private_pipeline(|_| {}).await;
    // A second process setting up the same topology finds it in place.
    let second = Pipeline::connect(PipelineSettings::new(server.url()))
        .await
        .expect("second setup");
    let record = sample_record(Uuid::now_v7());
    first.jobs().create(&record).await.expect("created");
    let err = second
        .jobs()
        .create(&record)
        .await
        .expect_err("duplicate refused");
    assert!(err.to_string().contains("already exists"), "{err}");
    let queues = second.queues().await.expect("queues");
    assert_eq!(queues.len(), Stage::ALL.len());
}

/// The job ids `submitters` see, newest first, from before `before`.
async fn indexed(
    pipeline: &Pipeline,
    submitters: jetscribe_nats::Submitters<'_>,
    before: Option<u64>,
) -> Vec<jetscribe_nats::IndexedJob> {
    use futures::TryStreamExt as _;
    let index = pipeline.submissions_newest_first(submitters, before).await;
    index.expect("index").try_collect().await.expect("read")
}

#[tokio::test]
async fn the_submissions_index_lists_one_owner_newest_first_among_many_others() {
    use jetscribe_nats::Submitters;
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    // Alice's 5 jobs are scattered among 1200 of others: the reader's windows must grow.
    let mut alices = Vec::new();
    for n in 0..1205 {
        let owner = (n % 241 == 0).then(|| "alice".to_owned());
        let submission = proto_msgs::Submission {
            job_id: Uuid::now_v7(),
            owner: owner.or_else(|| Some(format!("key{}", n % 7))),
            created_at: OffsetDateTime::now_utc(),
        };
        if submission.owner.as_deref() == Some("alice") {
            alices.push(submission.job_id);
        }
        pipeline
            .index_submission(&submission)
            .await
            .expect("indexed");
        // Indexed twice (a retried submission): listed once.
        pipeline
            .index_submission(&submission)
            .await
            .expect("indexed");
    }
    alices.reverse();
    let listed = indexed(&pipeline, Submitters::Only(Some("alice")), None).await;
    let ids: Vec<Uuid> = listed.iter().map(|job| job.job_id).collect();
    assert_eq!(ids, alices);
    // From a cursor: what came before it only.
    let rest = indexed(
        &pipeline,
        Submitters::Only(Some("alice")),
        Some(listed[1].sequence),
    )
    .await;
    assert_eq!(rest, listed[2..]);
    assert_eq!(
        indexed(&pipeline, Submitters::Everyone, None).await.len(),
        1205
    );
    assert!(
        indexed(&pipeline, Submitters::Only(None), None)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn setup_brings_streams_and_consumers_made_earlier_to_the_current_settings() {
    let (server, _first) = private_pipeline(|settings| {
        settings.ack_wait = Duration::from_secs(60);
        settings.retention = Duration::from_secs(7 * 86_400);
    })
    .await;
    let mut settings = PipelineSettings::new(server.url());
    settings.ack_wait = Duration::from_secs(300);
    settings.retention = Duration::from_secs(86_400);
    let pipeline = Pipeline::connect(settings.clone()).await.expect("connects");
    let js = pipeline.jetstream();
    let work = js
        .get_stream(proto_msgs::PIPELINE_STREAM)
        .await
        .expect("work stream");
    for queue in settings.queues() {
        let consumer = work
            .consumer_info(queue.consumer_name())
            .await
            .expect("consumer");
        assert_eq!(
            consumer.config.ack_wait,
            Duration::from_secs(300),
            "{queue}"
        );
    }
    // The janitor removes a finished job at the retention; the server keeps what is left of
    // it a day longer, and never expires a job record (a job may wait in a queue for longer).
    let bucket_stream = format!("KV_{}", proto_msgs::JOBS_BUCKET);
    for (name, max_age) in [
        (proto_msgs::EVENTS_STREAM, 2 * 86_400),
        (proto_msgs::SUBMISSIONS_STREAM, 2 * 86_400),
        (proto_msgs::DEAD_LETTER_STREAM, 2 * 86_400),
        (bucket_stream.as_str(), 0),
    ] {
        let mut stream = js.get_stream(name).await.expect("stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.max_age, Duration::from_secs(max_age), "{name}");
    }
}

#[tokio::test]
async fn the_jobs_with_a_stored_message_are_all_found_whatever_their_stage() {
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    pipeline
        .publish(&proto_msgs::DecodeRequest {
            job_id: ids[0],
            input_blob: "jobs/a/input".into(),
            filename: "a.wav".into(),
            channels: Default::default(),
        })
        .await
        .expect("published");
    pipeline
        .publish(&proto_msgs::NotifyRequest::first(ids[1]))
        .await
        .expect("published");
    pipeline
        .publish(&proto_msgs::NotifyRequest::first(ids[2]))
        .await
        .expect("published");
    let queued = pipeline.queued_jobs().await.expect("queued jobs");
    assert_eq!(queued, ids.iter().copied().collect());
}

#[tokio::test]
async fn transcriptions_queued_before_models_were_routed_move_to_the_default_models_pool() {
    use async_nats::jetstream::consumer;
    let (server, first) = private_pipeline(|_| {}).await;
    let js = first.jetstream();
    let work = js
        .get_stream(proto_msgs::PIPELINE_STREAM)
        .await
        .expect("work stream");
    // What a version without routing left: the stage's one consumer and a message queued on
    // the stage's own subject, naming no model.
    let unrouted = Stage::Transcribe.consumer_name();
    work.create_consumer(consumer::pull::Config {
        durable_name: Some(unrouted.clone()),
        filter_subject: Stage::Transcribe.subject(),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await
    .expect("the old consumer");
    let request = TranscribeRequest {
        job_id: Uuid::now_v7(),
        audio_blob: "jobs/x/audio.ch0.s16le".into(),
        channel_blobs: vec![
            "jobs/x/audio.ch0.s16le".into(),
            "jobs/x/audio.ch1.s16le".into(),
        ],
        duration_s: 11.0,
        language: None,
        word_timestamps: false,
        model: None,
        decoding: DecodingRequest::default(),
    };
    let payload = proto_msgs::encode(&request).expect("encodes");
    js.publish(Stage::Transcribe.subject(), payload.into())
        .await
        .expect("published")
        .await
        .expect("stored");
    // Two processes of this version start (one would do; both may run at once).
    for _ in 0..2 {
        let mut settings = PipelineSettings::new(server.url());
        settings.default_model = ModelName::parse("tiny.en").expect("valid");
        Pipeline::connect(settings).await.expect("set up");
    }
    let pool = "jetscribe.pipeline.transcribe.tiny.en";
    let moved = work
        .get_last_raw_message_by_subject(pool)
        .await
        .expect("moved to the default model's pool");
    let moved: TranscribeRequest = proto_msgs::decode(&moved.payload).expect("decodes");
    assert_eq!(moved, request);
    let mut info = work.clone();
    let state = info.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, 1, "moved once, the old message removed");
    let err = work
        .consumer_info(&unrouted)
        .await
        .expect_err("the old consumer is removed");
    assert_eq!(
        err.kind(),
        async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
    );
}
