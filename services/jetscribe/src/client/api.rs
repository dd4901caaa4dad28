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
use uuid::Uuid;

use super::Exit;

/// Why a client command stopped, and its exit code.
#[derive(Debug)]
pub struct ClientError {
    pub exit: Exit,
    pub message: String,
    /// The status of the server's refusal, when it refused.
    pub status: Option<StatusCode>,
}

impl ClientError {
    pub fn new(exit: Exit, message: String) -> Self {
        Self {
            exit,
            message,
            status: None,
        }
    }

    /// The server could not be reached, or its answer could not be read.
    fn unreachable(url: &str, err: &reqwest::Error) -> Self {
        Self::new(Exit::Unreachable, format!("{url}: {err}"))
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
    /// The end named by a job status or a final event's kind.
    fn of(name: &str) -> Option<Self> {
        match name {
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

/// The exit code of a refusal: the request was wrong (4xx), or the server cannot serve it now
/// (5xx, and 429: too many submissions, try later).
fn refusal_exit(status: StatusCode) -> Exit {
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Exit::Usage
    } else {
        Exit::Unreachable
    }
}

/// Breaks of a job's event stream in a row after which the client gives up, and the longest
/// wait between tries (doubling from 1 s): about a minute in all, a server's restart.
const EVENT_RETRIES: u32 = 6;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(16);
/// Longest silence on an event stream: the server sends a comment every 15 s.
const EVENT_SILENCE: Duration = Duration::from_secs(45);

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
                let why = "JETSCRIBE_API_KEY: not a valid header value".to_owned();
                ClientError::new(Exit::Usage, why)
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ClientError::new(Exit::Usage, format!("HTTP client: {err}")))?;
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

    async fn json_of(&self, response: Response) -> Result<Value, ClientError> {
        (response.json().await).map_err(|err| ClientError::unreachable(&self.base, &err))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.http.get(self.url(path))).await?;
        self.json_of(response).await
    }

    pub async fn status(&self, job_id: Uuid) -> Result<Value, ClientError> {
        self.get_json(&format!("/status/{job_id}")).await
    }

    /// Uploads `file` to `/process` with `fields`, counting the bytes sent on `bar`; returns
    /// the job's id.
    pub async fn submit(
        &self,
        file: &Path,
        fields: &[(&'static str, String)],
        bar: &ProgressBar,
    ) -> Result<Uuid, ClientError> {
        let unreadable = |err: std::io::Error| {
            ClientError::new(
                Exit::Usage,
                format!("cannot read {}: {err}", file.display()),
            )
        };
        let opened = tokio::fs::File::open(file).await.map_err(unreadable)?;
        let size = opened.metadata().await.map_err(unreadable)?.len();
        bar.set_length(size);
        let counted = bar.clone();
        let chunks =
            ReaderStream::new(opened).inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
        let name = super::file_name(file);
        let body = reqwest::Body::wrap_stream(chunks);
        let part = Part::stream_with_length(body, size).file_name(name);
        let form = (fields.iter())
            .fold(Form::new(), |form, (name, value)| {
                form.text(*name, value.clone())
            })
            .part("file", part);
        let request = self.http.post(self.url("/process")).multipart(form);
        let body = self.json_of(self.send(request).await?).await?;
        (body["job_id"].as_str().and_then(|id| id.parse().ok())).ok_or_else(|| {
            ClientError::new(
                Exit::Unreachable,
                format!("an answer without a job id: {body}"),
            )
        })
    }

    /// A completed job's result in `format`. A job that has not completed is an error: exit 1
    /// if it failed or was cancelled, 4 while it runs.
    pub async fn result(&self, job_id: Uuid, format: &str) -> Result<String, ClientError> {
        let request = self
            .http
            .get(self.url(&format!("/result/{job_id}?format={format}")));
        let response = request
            .send()
            .await
            .map_err(|err| ClientError::unreachable(&self.base, &err))?;
        if response.status() == StatusCode::OK {
            return (response.text().await)
                .map_err(|err| ClientError::unreachable(&self.base, &err));
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let exit = match body["status"].as_str() {
            Some("pending" | "processing") => Exit::StillRunning,
            Some("failed" | "cancelled") => Exit::JobFailed,
            _ => refusal_exit(status),
        };
        let why = body["error_message"]
            .as_str()
            .or(body["detail"].as_str())
            .unwrap_or("");
        let state = body["status"].as_str().unwrap_or("refused");
        Err(ClientError::new(
            exit,
            format!("job {job_id}: {state} {why}").trim_end().to_owned(),
        ))
    }

    /// `DELETE /jobs/{job_id}`; a job that has ended cannot be cancelled (exit 1).
    pub async fn cancel(&self, job_id: Uuid) -> Result<Value, ClientError> {
        let request = self.http.delete(self.url(&format!("/jobs/{job_id}")));
        match self.send(request).await {
            Err(err) if err.status == Some(StatusCode::CONFLICT) => Err(ClientError {
                exit: Exit::JobFailed,
                ..err
            }),
            Err(err) => Err(err),
            Ok(response) => self.json_of(response).await,
        }
    }

    /// Reads the job's events, calling `seen` with each, until its final one; reconnects with
    /// `Last-Event-ID` when the stream breaks or falls silent (the server restarting, a
    /// proxy's timeout), giving up after [`EVENT_RETRIES`] breaks in a row.
    pub async fn follow_events(
        &self,
        job_id: Uuid,
        mut seen: impl FnMut(&Value),
    ) -> Result<JobEnd, ClientError> {
        let mut last_id: Option<String> = None;
        let mut breaks = 0;
        loop {
            let mut request = self.http.get(self.url(&format!("/events/{job_id}")));
            if let Some(id) = &last_id {
                request = request.header("Last-Event-ID", id);
            }
            let before = last_id.clone();
            let read = match self.send(request).await {
                Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                    return self.ended(job_id).await;
                }
                Ok(response) => read_events(response, &mut last_id, &mut seen).await,
                Err(err) => Err(err),
            };
            let broke = match read {
                Ok(Some(end)) => return Ok(end),
                Err(err) if err.exit == Exit::Usage => return Err(err),
                Ok(None) => ClientError::new(Exit::Unreachable, "the event stream ended".into()),
                Err(err) => err,
            };
            // Events came through: the stream worked, and this break is the first in a row.
            breaks = if last_id != before { 1 } else { breaks + 1 };
            if breaks > EVENT_RETRIES {
                return Err(broke);
            }
            tokio::time::sleep(retry_wait(breaks)).await;
        }
    }

    /// How a job that has ended ended, from its status.
    async fn ended(&self, job_id: Uuid) -> Result<JobEnd, ClientError> {
        let status = self.status(job_id).await?;
        let status = status["status"].as_str().unwrap_or_default();
        JobEnd::of(status).ok_or_else(|| {
            let why = format!("the events of job {job_id} ended while it is {status}");
            ClientError::new(Exit::Unreachable, why)
        })
    }
}

/// The wait before the `breaks`-th try: 1 s, doubling, at most [`MAX_RETRY_WAIT`].
fn retry_wait(breaks: u32) -> Duration {
    let doubled = Duration::from_secs(1) * 2u32.saturating_pow(breaks.saturating_sub(1));
    doubled.min(MAX_RETRY_WAIT)
}

/// Reads Server-Sent Events until the job's final one (its end), the stream's end, or a
/// silence longer than [`EVENT_SILENCE`] (none: reconnect).
async fn read_events(
    response: Response,
    last_id: &mut Option<String>,
    seen: &mut impl FnMut(&Value),
) -> Result<Option<JobEnd>, ClientError> {
    let mut chunks = response.bytes_stream();
    let mut parser = SseParser::default();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(EVENT_SILENCE, chunks.next()).await {
        for event in parser.push(&chunk) {
            if let Some(id) = event.id {
                *last_id = Some(id);
            }
            let Some(event) = event
                .data
                .and_then(|data| serde_json::from_str::<Value>(&data).ok())
            else {
                continue;
            };
            seen(&event);
            if let Some(end) = event["kind"].as_str().and_then(JobEnd::of) {
                return Ok(Some(end));
            }
        }
    }
    Ok(None)
}

/// One Server-Sent Event: its `id:` and its `data:` lines joined by newlines.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    data: Option<String>,
}

/// Cuts a byte stream into Server-Sent Events. Bytes are kept until an event is whole, so a
/// character split between chunks is decoded whole; CRLF line ends read as LF.
#[derive(Debug, Default)]
struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending
            .extend(chunk.iter().filter(|byte| **byte != b'\r'));
        let mut events = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|pair| pair == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            events.push(sse_event(&String::from_utf8_lossy(&block)));
        }
        events
    }
}

/// The fields of one event's block of lines (comments and other fields left out).
fn sse_event(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    for line in block.lines() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match name {
            "id" => event.id = Some(value),
            "data" => match &mut event.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => event.data = Some(value),
            },
            _ => {}
        }
    }
    event
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
        status: Some(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_exit_as_bad_usage_or_as_a_server_unavailable_now() {
        let cases = [
            (400, Exit::Usage),
            (401, Exit::Usage),
            (404, Exit::Usage),
            (413, Exit::Usage),
            (429, Exit::Unreachable),
            (503, Exit::Unreachable),
            (500, Exit::Unreachable),
        ];
        for (status, exit) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(refusal_exit(status), exit, "{status}");
        }
    }

    #[test]
    fn events_are_whole_across_chunks_line_ends_and_split_characters() {
        let mut parser = SseParser::default();
        let stream = ": keep-alive\r\n\r\nevent: progress\r\nid: 17\r\ndata: {\"text\":\"caf\u{e9}\"}\r\n\r\nid: 18\ndata: a\ndata: b\n\n";
        let bytes = stream.as_bytes();
        // Cut inside the two-byte é and inside the CRLF CRLF.
        let cut = stream.find('\u{e9}').expect("é") + 1;
        let mut events = parser.push(&bytes[..cut]);
        events.extend(parser.push(&bytes[cut..]));
        let expected = [
            SseEvent::default(),
            SseEvent {
                id: Some("17".into()),
                data: Some("{\"text\":\"caf\u{e9}\"}".into()),
            },
            SseEvent {
                id: Some("18".into()),
                data: Some("a\nb".into()),
            },
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn tries_wait_longer_each_time_up_to_a_bound() {
        let waits: Vec<u64> = (1..=7).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 16, 16]);
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
            assert_eq!(JobEnd::of(kind), end, "{kind}");
        }
    }
}
