//! Local HTTP servers the app talks to: a webhook receiver and an OTLP trace collector. Each
//! listens on a port the system picks, read back from the bound socket.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, IntoEndpoint, Route, Server, handler, post};
use tokio::sync::mpsc;

/// Serves `app` on a loopback port the system picks; returns that address.
async fn serve_on_loopback<E>(app: E) -> SocketAddr
where
    E: IntoEndpoint + Send + 'static,
    E::Endpoint: 'static,
{
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("a loopback port");
    let addr = *acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr())
        .expect("a socket address");
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    addr
}

/// A local HTTP server that records every webhook POSTed to it, and answers with scripted
/// statuses (then 200).
pub struct WebhookReceiver {
    pub url: String,
    received: mpsc::UnboundedReceiver<WebhookDelivery>,
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body exactly as sent.
    pub raw_body: Vec<u8>,
    pub body: serde_json::Value,
    pub arrived: Instant,
    /// The status the receiver answered.
    pub answered: u16,
}

/// A scripted answer: status and optional Retry-After seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScriptedAnswer {
    pub status: u16,
    pub retry_after_s: Option<u64>,
}

impl ScriptedAnswer {
    /// Answers `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after_s: None,
        }
    }

    /// Answers `status` with `Retry-After: <seconds>`.
    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Self {
            status,
            retry_after_s: Some(seconds),
        }
    }
}

struct ReceiverState {
    sender: mpsc::UnboundedSender<WebhookDelivery>,
    script: Mutex<VecDeque<ScriptedAnswer>>,
}

#[handler]
async fn receive(
    request: &poem::Request,
    body: Vec<u8>,
    Data(state): Data<&Arc<ReceiverState>>,
) -> poem::Response {
    let answer = state
        .script
        .lock()
        .expect("the script lock is never poisoned")
        .pop_front()
        .unwrap_or(ScriptedAnswer::status(200));
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default().to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let delivery = WebhookDelivery {
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw_body: body,
        arrived: Instant::now(),
        answered: answer.status,
    };
    // The test may have stopped listening; the answer is the same.
    drop(state.sender.send(delivery));
    let status = poem::http::StatusCode::from_u16(answer.status).expect("a valid status");
    let mut response = poem::Response::builder().status(status);
    if let Some(seconds) = answer.retry_after_s {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body("ok")
}

impl WebhookReceiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> WebhookReceiver {
        Self::scripted(&[]).await
    }

    /// A receiver that answers `script` in order, then 200.
    pub async fn scripted(script: &[ScriptedAnswer]) -> WebhookReceiver {
        let (sender, received) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            sender,
            script: Mutex::new(script.iter().copied().collect()),
        });
        let addr = serve_on_loopback(Route::new().at("/hook", post(receive)).data(state)).await;
        WebhookReceiver {
            url: format!("http://{addr}/hook"),
            received,
        }
    }

    /// The next webhook body, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> serde_json::Value {
        self.next_delivery(timeout).await.body
    }

    /// The next webhook with its headers and arrival time, waiting at most `timeout`.
    pub async fn next_delivery(&mut self, timeout: Duration) -> WebhookDelivery {
        self.try_next(timeout)
            .await
            .expect("a webhook arrives in time")
    }

    /// A webhook that arrives within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<WebhookDelivery> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A local HTTP server that only counts the requests it gets, whatever their method and path: a
/// tripwire for URLs that must never be fetched.
pub struct Tripwire {
    /// Base URL: any path under it counts.
    pub url: String,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl Tripwire {
    pub async fn start() -> Tripwire {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = poem::endpoint::make(move |_request| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "tripped"
            }
        });
        let addr = serve_on_loopback(app).await;
        Tripwire {
            url: format!("http://{addr}"),
            hits,
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A local OTLP/HTTP endpoint that records every trace export (protobuf bodies).
pub struct TraceCollector {
    /// Base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub endpoint: String,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
}

#[handler]
async fn collect_traces(
    body: Vec<u8>,
    Data(sender): Data<&mpsc::UnboundedSender<Vec<u8>>>,
) -> &'static str {
    // The test may have stopped listening; the exporter needs no more than a 200.
    drop(sender.send(body));
    ""
}

impl TraceCollector {
    pub async fn start() -> TraceCollector {
        let (sender, received) = mpsc::unbounded_channel();
        let app = Route::new()
            .at("/v1/traces", post(collect_traces))
            .data(sender);
        let addr = serve_on_loopback(app).await;
        TraceCollector {
            endpoint: format!("http://{addr}"),
            received,
        }
    }

    /// Every export body received so far.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Ok(body) = self.received.try_recv() {
            bodies.push(body);
        }
        bodies
    }
}
