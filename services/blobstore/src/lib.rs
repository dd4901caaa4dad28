//! The object store as jetscribe uses it: a local folder (`file://…`) or S3 (`s3://bucket/prefix`,
//! credentials from the usual AWS_* variables). It owns streamed writes in bounded memory
//! (multipart uploads), streamed reads, JSON blobs and removal of a job's blobs.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("OBJECT_STORE_URL {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("blob {path} not found")]
    NotFound { path: String },
    #[error("object store, {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("blob {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("local file for {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl BlobError {
    fn store(path: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => BlobError::NotFound {
                path: path.to_owned(),
            },
            source => BlobError::Store {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Size of each multipart part, and so the unit of memory a writer holds.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once by one writer: memory per writer ≤ PART_SIZE × (1 + this).
const PARTS_IN_FLIGHT: usize = 2;

/// `<name>#<digits>`: object_store's file for a blob being written.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(blob, number)| {
        !blob.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Whether `path` was last modified at least `max_age` ago.
fn untouched_for(path: &std::path::Path, max_age: std::time::Duration) -> bool {
    let modified = std::fs::metadata(path).and_then(|meta| meta.modified());
    modified.is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= max_age))
}

/// Removes the entries right under `dir` (files or folders) not modified for `max_age`: the
/// staging copies a decoder that died left in its work folder. Returns how many.
pub fn remove_stale_entries(dir: &std::path::Path, max_age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let stale = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| untouched_for(path, max_age));
    let removed = stale.filter(|path| match path.is_dir() {
        true => std::fs::remove_dir_all(path).is_ok(),
        false => std::fs::remove_file(path).is_ok(),
    });
    removed.count()
}

/// OBJECT_STORE_URL as it is printed (errors, logs): without a user or password.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both fail only for URLs that cannot have them.
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

/// Bytes free to an unprivileged writer on the disk that holds `path`.
pub fn free_space(path: &std::path::Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::useless_conversion)] // the types differ between platforms
    let (blocks, size) = (
        u64::from(stats.blocks_available()),
        u64::from(stats.fragment_size()),
    );
    Some(blocks.saturating_mul(size))
}

/// Handle on the object store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// The same store when it is a local folder, for [`BlobStore::local_file`].
    local: Option<Arc<LocalFileSystem>>,
    /// The folder of a local store, whose disk [`BlobStore::free_space`] measures.
    local_dir: Option<std::path::PathBuf>,
    description: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl BlobStore {
    /// Opens `file:///abs/dir` (created if missing) or `s3://bucket[/prefix]`, with the S3
    /// client configured from the usual AWS_* variables.
    pub fn open(url: &str) -> Result<Self, BlobError> {
        Self::open_with(url, &[])
    }

    /// [`open`](Self::open), with S3 options given here rather than in the environment (their
    /// AWS_* names, lower case or not: `aws_endpoint`, `aws_access_key_id` …), over those of the
    /// environment.
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Self, BlobError> {
        let shown = shown_url(url);
        let config_error = |reason: String| BlobError::Config {
            url: shown.clone(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|err| config_error(err.to_string()))?;
        let mut local = None;
        let mut local_dir = None;
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| config_error("expected file:///absolute/path".to_owned()))?;
                std::fs::create_dir_all(&dir).map_err(|err| {
                    config_error(format!("cannot create {}: {err}", dir.display()))
                })?;
                let folder = Arc::new(
                    LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|err| config_error(err.to_string()))?
                        // Removing a job's blobs also removes its now empty folder.
                        .with_automatic_cleanup(true),
                );
                local = Some(folder.clone());
                local_dir = Some(dir);
                folder
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .ok_or_else(|| config_error("expected s3://bucket/prefix".to_owned()))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in s3_options {
                    let key = key
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| config_error(format!("unknown S3 option {key:?}")))?;
                    builder = builder.with_config(key, *value);
                }
                let s3 = builder
                    .build()
                    .map_err(|err| config_error(err.to_string()))?;
                let prefix = parsed.path().trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            other => {
                return Err(config_error(format!(
                    "unsupported scheme {other:?}; expected file:// or s3://"
                )));
            }
        };
        Ok(Self {
            inner,
            local,
            local_dir,
            description: shown,
        })
    }

    /// Bytes free to an unprivileged writer on the disk of a local store; `None` for a remote
    /// store (or when the disk cannot be asked).
    pub fn free_space(&self) -> Option<u64> {
        free_space(self.local_dir.as_deref()?)
    }

    /// The file that holds `path` when the store is a local folder (and the blob exists), so
    /// that a reader needing a seekable file (ffmpeg) reads it in place instead of a copy.
    pub fn local_file(&self, path: &str) -> Option<std::path::PathBuf> {
        let file = self
            .local
            .as_ref()?
            .path_to_filesystem(&Path::from(path))
            .ok()?;
        file.is_file().then_some(file)
    }

    /// Starts a streamed write of `path`; nothing is visible until [`BlobWriter::finish`].
    pub async fn writer(&self, path: &str) -> Result<BlobWriter, BlobError> {
        let location = Path::from(path);
        let upload = self
            .inner
            .put_multipart(&location)
            .await
            .map_err(|err| BlobError::store(path, err))?;
        Ok(BlobWriter {
            path: path.to_owned(),
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            written: 0,
        })
    }

    pub async fn put_json<T: Serialize>(&self, path: &str, value: &T) -> Result<(), BlobError> {
        let bytes = serde_json::to_vec(value).map_err(|source| BlobError::Json {
            path: path.to_owned(),
            source,
        })?;
        self.inner
            .put(&Path::from(path), bytes.into())
            .await
            .map_err(|err| BlobError::store(path, err))?;
        Ok(())
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, BlobError> {
        let bytes = self
            .inner
            .get(&Path::from(path))
            .await
            .map_err(|err| BlobError::store(path, err))?
            .bytes()
            .await
            .map_err(|err| BlobError::store(path, err))?;
        serde_json::from_slice(&bytes).map_err(|source| BlobError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// The blob's bytes from byte `offset` on, as a stream of chunks.
    pub async fn get_stream_from(
        &self,
        path: &str,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static, BlobError> {
        let owned = path.to_owned();
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Offset(offset)),
            ..Default::default()
        };
        let result = self
            .inner
            .get_opts(&Path::from(path), options)
            .await
            .map_err(|err| BlobError::store(path, err))?;
        Ok(result
            .into_stream()
            .map_err(move |err| BlobError::store(&owned, err)))
    }

    /// The blob's bytes as a stream of chunks.
    pub async fn get_stream(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static, BlobError> {
        let owned = path.to_owned();
        let result = self
            .inner
            .get(&Path::from(path))
            .await
            .map_err(|err| BlobError::store(path, err))?;
        Ok(result
            .into_stream()
            .map_err(move |err| BlobError::store(&owned, err)))
    }

    /// Copies the blob to a local file (streamed); returns its size.
    pub async fn download_to(&self, path: &str, file: &std::path::Path) -> Result<u64, BlobError> {
        let io_error = |source| BlobError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = tokio::fs::File::create(file).await.map_err(io_error)?;
        let mut chunks = self.get_stream(path).await?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(io_error)?;
        }
        out.flush().await.map_err(io_error)?;
        Ok(size)
    }

    pub async fn size(&self, path: &str) -> Result<u64, BlobError> {
        Ok(self
            .inner
            .head(&Path::from(path))
            .await
            .map_err(|err| BlobError::store(path, err))?
            .size)
    }

    /// Removes every blob under `prefix` (a job's folder).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        let location = Path::from(prefix);
        let paths: Vec<Path> = self
            .inner
            .list(Some(&location))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|err| BlobError::store(prefix, err))?;
        for path in paths {
            match self.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(BlobError::store(path.as_ref(), err)),
            }
        }
        Ok(())
    }

    /// Removes every blob under `prefix` last written more than `max_age` ago, except those
    /// `keep` names by path; returns how many.
    pub async fn delete_older_than(
        &self,
        prefix: &str,
        max_age: std::time::Duration,
        keep: impl Fn(&str) -> bool,
    ) -> Result<usize, BlobError> {
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let cutoff = chrono::Utc::now()
            .checked_sub_signed(max_age)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let expired: Vec<Path> = self
            .inner
            .list(Some(&Path::from(prefix)))
            .try_filter(|meta| {
                futures::future::ready(meta.last_modified < cutoff && !keep(meta.location.as_ref()))
            })
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|err| BlobError::store(prefix, err))?;
        for path in &expired {
            match self.inner.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(BlobError::store(path.as_ref(), err)),
            }
        }
        Ok(expired.len())
    }

    /// Removes the staging files of a local store's writes that were never finished (a killed
    /// upload or decode) and not written for `max_age`; returns how many. object_store writes a
    /// blob as `<name>#<n>` and renames it when done, and hides such files from listings, so
    /// [`BlobStore::delete_older_than`] never sees them.
    pub fn sweep_staging(&self, max_age: std::time::Duration) -> usize {
        let Some(dir) = &self.local_dir else {
            return 0;
        };
        let mut removed = 0;
        let mut pending = vec![dir.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if is_staging_name(&entry.file_name().to_string_lossy())
                    && untouched_for(&path, max_age)
                    && std::fs::remove_file(&path).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Whether the store answers (for `/health`).
    pub async fn check(&self) -> Result<(), BlobError> {
        let probe = Path::from("health");
        match self.inner.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(BlobError::store("health", err)),
        }
    }
}

/// A streamed write in progress. Dropped without [`finish`](Self::finish) (a request cancelled
/// mid-upload, say), the partial upload is aborted in the background: nothing is left behind.
pub struct BlobWriter {
    path: String,
    /// `None` once finished or aborted.
    upload: Option<WriteMultipart>,
    written: u64,
}

impl BlobWriter {
    fn upload(&mut self) -> &mut WriteMultipart {
        self.upload
            .as_mut()
            .expect("a BlobWriter is used only until finish or abort")
    }

    /// Appends `chunk`, first waiting until few enough parts are in flight: memory stays bounded
    /// however fast the producer is.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let path = self.path.clone();
        let upload = self.upload();
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|err| BlobError::store(&path, err))?;
        let len = chunk.len() as u64;
        upload.put(chunk);
        self.written += len;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn finish(mut self) -> Result<u64, BlobError> {
        let upload = self.upload.take().expect("not finished twice");
        upload
            .finish()
            .await
            .map_err(|err| BlobError::store(&self.path, err))?;
        Ok(self.written)
    }

    /// Abandons the upload; nothing is left in the store.
    pub async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            abort_upload(&self.path, upload).await;
        }
    }
}

/// Aborts a multipart upload; a failure (the parts stay until the store expires them) is
/// logged.
async fn abort_upload(path: &str, upload: WriteMultipart) {
    if let Err(err) = upload.abort().await {
        tracing::warn!(path, error = %err, "partial upload not removed");
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let path = self.path.clone();
            runtime.spawn(async move { abort_upload(&path, upload).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_staging_files_are_swept_once_stale_and_blobs_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(&format!("file://{}", dir.path().display())).expect("open");
        let write = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            let file = std::fs::File::create(&path).expect("file");
            let at = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
            file.set_modified(at).expect("mtime");
            path
        };
        let orphan = write("jobs/a/input#3", 7200);
        let writing = write("jobs/b/input#1", 10);
        let blob = write("jobs/c/input", 7200);
        let odd = write("jobs/c/notes#draft", 7200);
        assert_eq!(store.sweep_staging(std::time::Duration::from_secs(3600)), 1);
        assert!(!orphan.exists());
        assert!(writing.exists() && blob.exists() && odd.exists());

        let work = tempfile::tempdir().expect("tempdir");
        let stale = work.path().join(".tmpOld");
        std::fs::create_dir(&stale).expect("dir");
        std::fs::File::create(stale.join("input")).expect("file");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(90_000);
        std::fs::File::open(&stale)
            .expect("dir")
            .set_modified(old)
            .expect("mtime");
        let fresh = work.path().join(".tmpNew");
        std::fs::create_dir(&fresh).expect("dir");
        assert_eq!(
            remove_stale_entries(work.path(), std::time::Duration::from_secs(86_400)),
            1
        );
        assert!(!stale.exists() && fresh.exists());
    }

    #[test]
    fn a_store_url_is_printed_without_its_credentials() {
        let cases = [
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("s3://AKIA:s3cret@bucket/prefix", "s3://bucket/prefix"),
            ("file:///data/blobs", "file:///data/blobs"),
            ("not a url:s3cret@host", "***@host"),
        ];
        for (url, shown) in cases {
            assert_eq!(shown_url(url), shown, "{url}");
        }
        let refused = BlobStore::open("ftp://user:s3cret@host/x").expect_err("refused");
        assert!(!refused.to_string().contains("s3cret"), "{refused}");
    }

    #[tokio::test]
    async fn a_streamed_write_reads_back_whole_and_a_job_folder_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = BlobStore::open(&url).expect("open");
        let mut writer = store.writer("jobs/a/input").await.expect("writer");
        for i in 0..20u8 {
            writer
                .write(Bytes::from(vec![i; 1024 * 1024 + 3]))
                .await
                .expect("write");
        }
        assert_eq!(
            store.local_file("jobs/a/input"),
            None,
            "not visible before finish"
        );
        let written = writer.finish().await.expect("finish");
        assert_eq!(written, 20 * (1024 * 1024 + 3));
        assert_eq!(store.size("jobs/a/input").await.expect("size"), written);
        // A local store's blob is a file that can be read in place.
        let file = store.local_file("jobs/a/input").expect("a local file");
        assert_eq!(std::fs::metadata(&file).expect("file").len(), written);
        assert_eq!(
            store
                .delete_older_than("jobs", std::time::Duration::from_secs(3600), |_| false)
                .await
                .expect("cleanup"),
            0,
            "a fresh blob is kept"
        );
        store.delete_prefix("jobs/a").await.expect("delete");
        assert!(matches!(
            store.size("jobs/a/input").await,
            Err(BlobError::NotFound { .. })
        ));
    }

    #[test]
    fn an_unknown_scheme_is_refused_with_the_variable_named() {
        let err = BlobStore::open("ftp://x/y").expect_err("must fail");
        assert!(err.to_string().contains("OBJECT_STORE_URL"), "{err}");
    }
}
