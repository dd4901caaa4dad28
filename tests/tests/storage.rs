//! The object store behaves the same on a local folder and on a real S3 server (SeaweedFS):
//! streamed multipart writes that read back whole, ranged reads, sizes, JSON blobs, a job's
//! folder removed, and a missing blob told apart from a failure.

use bytes::Bytes;
use futures::TryStreamExt;
use jetscribe_blobstore::{BlobError, BlobStore};
use jetscribe_tests::S3Server;

/// The byte at `offset` of the test blob.
fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

async fn behaves_as_a_store(store: &BlobStore) {
    // 20 writes of a little more than 1 MiB: several 8 MiB parts, the last one short.
    let chunk = 1024 * 1024 + 3;
    let mut writer = store.writer("jobs/a/input").await.expect("writer");
    for index in 0..20u64 {
        let start = index * chunk;
        let bytes: Vec<u8> = (start..start + chunk).map(byte_at).collect();
        writer.write(Bytes::from(bytes)).await.expect("write");
    }
    let written = writer.finish().await.expect("finish");
    assert_eq!(written, 20 * chunk);
    assert_eq!(store.size("jobs/a/input").await.expect("size"), written);

    let whole: Vec<Bytes> = store
        .get_stream("jobs/a/input")
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("chunks");
    let whole = whole.concat();
    assert_eq!(whole.len() as u64, written);
    assert!(
        whole
            .iter()
            .enumerate()
            .all(|(i, b)| *b == byte_at(i as u64))
    );
    let offset = 15 * chunk + 7;
    let tail: Vec<Bytes> = store
        .get_stream_from("jobs/a/input", offset)
        .await
        .expect("ranged read")
        .try_collect()
        .await
        .expect("chunks");
    let tail = tail.concat();
    assert_eq!(tail.len() as u64, written - offset);
    assert_eq!(tail[0], byte_at(offset));

    let value = serde_json::json!({"resume_sample": 480_000, "segments": []});
    store
        .put_json("jobs/a/checkpoint.json", &value)
        .await
        .expect("put");
    let read: serde_json::Value = store.get_json("jobs/a/checkpoint.json").await.expect("get");
    assert_eq!(read, value);

    let fresh = store
        .delete_older_than("jobs", std::time::Duration::from_secs(3600), |_| false)
        .await
        .expect("cleanup");
    assert_eq!(fresh, 0, "fresh blobs are kept");
    store.delete_prefix("jobs/a").await.expect("delete");
    for path in ["jobs/a/input", "jobs/a/checkpoint.json"] {
        assert!(
            matches!(store.size(path).await, Err(BlobError::NotFound { .. })),
            "{path} removed"
        );
    }
    let missing = store.get_json::<serde_json::Value>("jobs/b/x.json").await;
    assert!(
        matches!(missing, Err(BlobError::NotFound { .. })),
        "{missing:?}"
    );
    store.check().await.expect("the store answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_store_behaves_the_same_on_a_folder_and_on_s3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = BlobStore::open(&format!("file://{}", dir.path().display())).expect("open");
    behaves_as_a_store(&folder).await;

    let s3 = S3Server::start().await;
    let options = s3.options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let bucket = BlobStore::open_with(&s3.url("storage-test"), &options).expect("open");
    behaves_as_a_store(&bucket).await;
}
