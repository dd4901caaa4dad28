//! The client's requests: the upload with its progress, JSON and text answers, and a job's
//! events read as Server-Sent Events, resumed with `Last-Event-ID` when the stream breaks.

use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio_util::io::ReaderStream;

use super::Exit;

/// Why a client command stopped, and its exit code.
#[derive(Debug)]
pub struct ClientError {
    pub exit: Exit,
    pub message: String,
}

impl ClientError {
    pub fn usage(message: String) -> Self {
        Self {
            exit: Exit::Usage,
            message,
        }
    }

    fn unreachable(url: &str, err: &reqwest::Error) -> Self {
        let message = format!("cannot reach {url}: {err}");
        Self {
            exit: Exit::Unreachable,
            message,
        }
    }
}

/// How a followed job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Failed,
    Cancelled,
}

impl JobEnd {
    fn of(status: &str) -> Option<Self> {
        match status {
            "completed" => Some(JobEnd::Completed),
            "failed" => Some(JobEnd::Failed),
            "cancelled" => Some(JobEnd::Cancelled),
            _ => None,
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            JobEnd::Completed => Exit::Done,
            JobEnd::Failed | JobEnd::Cancelled => Exit::JobFailed,
        }
    }
}

/// The exit code of a refusal: the request was wrong (4xx), or the server cannot serve it now.
fn refusal_exit(status: StatusCode) -> Exit {
    match status.is_client_error() {
        true => Exit::Usage,
        false => Exit::Unreachable,
    }
}

/// Times the events of a job are read again after the stream breaks, before giving up.
const EVENT_RETRIES: u32 = 5;

/// A jetscribe server.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let value = format!("Bearer {key}").parse().map_err(|_| {
                ClientError::usage("JETSCRIBE_API_KEY: not a valid header value".to_owned())
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ClientError::usage(format!("HTTP client: {err}")))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request`; a refusal becomes an error with the server's `detail`.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refused(response).await)
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.http.get(self.url(path))).await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))
    }

    /// Uploads `file` to `/process` with `fields`, counting the bytes sent on `bar`; returns
    /// the job's id.
    pub async fn submit(
        &self,
        file: &Path,
        fields: &[(&'static str, String)],
        bar: &ProgressBar,
    ) -> Result<String, ClientError> {
        let unreadable = |err: std::io::Error| {
            ClientError::usage(format!("cannot read {}: {err}", file.display()))
        };
        let opened = tokio::fs::File::open(file).await.map_err(unreadable)?;
        let size = opened.metadata().await.map_err(unreadable)?.len();
        bar.set_length(size);
        let counted = bar.clone();
        let chunks =
            ReaderStream::new(opened).inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
        let name = super::file_name(file);
        let part =
            Part::stream_with_length(reqwest::Body::wrap_stream(chunks), size).file_name(name);
        let form = fields
            .iter()
            .fold(Form::new(), |form, (name, value)| {
                form.text(*name, value.clone())
            })
            .part("file", part);
        let response = self
            .send(self.http.post(self.url("/process")).multipart(form))
            .await?;
        let body: Value = response
            .json()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))?;
        body["job_id"].as_str().map(str::to_owned).ok_or_else(|| {
            ClientError::usage(format!("the server answered without a job id: {body}"))
        })
    }

    /// `/result` in `format`: the exit (done, failed, still running) and the body as text.
    pub async fn result(&self, job_id: &str, format: &str) -> Result<(Exit, String), ClientError> {
        let request = self
            .http
            .get(self.url(&format!("/result/{job_id}?format={format}")));
        let response = request
            .send()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))?;
        let exit = match response.status() {
            StatusCode::OK => Exit::Done,
            StatusCode::ACCEPTED => Exit::StillRunning,
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::GONE => Exit::JobFailed,
            _ => return Err(refused(response).await),
        };
        let body = response
            .text()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))?;
        Ok((exit, body))
    }

    /// `DELETE /jobs/{job_id}`; a job that has ended cannot be cancelled (exit 1).
    pub async fn cancel(&self, job_id: &str) -> Result<Value, ClientError> {
        let request = self.http.delete(self.url(&format!("/jobs/{job_id}")));
        match self.send(request).await {
            Err(err) if err.message.starts_with("409") => Err(ClientError {
                exit: Exit::JobFailed,
                message: err.message,
            }),
            Err(err) => Err(err),
            Ok(response) => response
                .json()
                .await
                .map_err(|err| ClientError::unreachable(&self.base, &err)),
        }
    }

    /// Reads the job's events, calling `seen` with each, until its final one; reconnects with
    /// `Last-Event-ID` when the stream breaks (the server restarting, a proxy's timeout).
    pub async fn follow_events(
        &self,
        job_id: &str,
        mut seen: impl FnMut(&Value),
    ) -> Result<JobEnd, ClientError> {
        let mut last_id: Option<String> = None;
        let mut breaks = 0;
        loop {
            let mut request = self.http.get(self.url(&format!("/events/{job_id}")));
            if let Some(id) = &last_id {
                request = request.header("Last-Event-ID", id);
            }
            let read = match self.send(request).await {
                Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                    return self.ended(job_id).await;
                }
                Ok(response) => read_events(response, &mut last_id, &mut seen).await,
                Err(err) if err.exit == Exit::Usage => return Err(err),
                Err(err) => Err(err),
            };
            match read {
                Ok(Some(end)) => return Ok(end),
                Ok(None) | Err(_) if breaks < EVENT_RETRIES => {
                    breaks += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(breaks))).await;
                }
                Ok(None) => return self.ended(job_id).await,
                Err(err) => return Err(err),
            }
        }
    }

    /// How a job that has ended ended, from its status.
    async fn ended(&self, job_id: &str) -> Result<JobEnd, ClientError> {
        let status = self.get_json(&format!("/status/{job_id}")).await?;
        let status = status["status"].as_str().unwrap_or_default();
        JobEnd::of(status).ok_or_else(|| ClientError {
            exit: Exit::Unreachable,
            message: format!("the events of job {job_id} ended while it is {status}"),
        })
    }
}

/// Reads Server-Sent Events until the job's final one (its end) or the stream's end (none).
async fn read_events(
    response: Response,
    last_id: &mut Option<String>,
    seen: &mut impl FnMut(&Value),
) -> Result<Option<JobEnd>, ClientError> {
    let mut chunks = response.bytes_stream();
    let mut pending = String::new();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return Ok(None);
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let (id, data) = sse_fields(&block);
            if let Some(id) = id {
                *last_id = Some(id.to_owned());
            }
            let Some(event) = data.and_then(|data| serde_json::from_str::<Value>(data).ok()) else {
                continue;
            };
            seen(&event);
            if let Some(end) = event["kind"].as_str().and_then(final_kind) {
                return Ok(Some(end));
            }
        }
    }
    Ok(None)
}

/// The `id:` and `data:` of one Server-Sent Event (comments and other fields left out).
fn sse_fields(block: &str) -> (Option<&str>, Option<&str>) {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim_start)
    };
    (field("id:"), field("data:"))
}

fn final_kind(kind: &str) -> Option<JobEnd> {
    JobEnd::of(kind)
}

/// A refusal as an error: its status and the server's `detail`.
async fn refused(response: Response) -> ClientError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|body| body["detail"].as_str().map(str::to_owned))
        .unwrap_or(body);
    ClientError {
        exit: refusal_exit(status),
        message: format!("{} {detail}", status.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_exit_as_bad_usage_or_as_an_unavailable_server() {
        let cases = [
            (400, Exit::Usage),
            (401, Exit::Usage),
            (404, Exit::Usage),
            (413, Exit::Usage),
            (503, Exit::Unreachable),
            (500, Exit::Unreachable),
        ];
        for (status, exit) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(refusal_exit(status), exit, "{status}");
        }
    }

    #[test]
    fn an_event_gives_its_id_and_data() {
        let block = ": keep-alive\nevent: progress\nid: 17\ndata: {\"kind\":\"progress\"}\n\n";
        assert_eq!(
            sse_fields(block),
            (Some("17"), Some("{\"kind\":\"progress\"}"))
        );
        assert_eq!(sse_fields(": keep-alive\n\n"), (None, None));
    }

    #[test]
    fn a_job_ends_completed_failed_or_cancelled() {
        let cases = [
            ("completed", Some(JobEnd::Completed)),
            ("failed", Some(JobEnd::Failed)),
            ("cancelled", Some(JobEnd::Cancelled)),
            ("progress", None),
        ];
        for (kind, end) in cases {
            assert_eq!(final_kind(kind), end, "{kind}");
        }
    }
}
