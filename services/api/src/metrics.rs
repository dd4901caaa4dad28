//! `GET /metrics`: this process's Prometheus metrics ([`jetscribe_metrics`]), with the queues
//! read from JetStream at the moment of the scrape. On the API's own address it needs a key like
//! every route but `/health`; [`metrics_server`] serves it alone, without keys, on METRICS_ADDR
//! (a port for the cluster's network only), for the API and the stage processes alike.

use jetscribe_nats::{ErrorChain, Pipeline};
use poem::listener::TcpListener;
use poem::web::Data;
use poem::{EndpointExt, Response, Route, Server, get, handler};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[handler]
async fn serve_metrics(Data(pipeline): Data<&Pipeline>) -> Response {
    metrics_response(pipeline).await
}

/// The Prometheus text of the process, with the queues read now.
pub(crate) async fn metrics_response(pipeline: &Pipeline) -> Response {
    if let Err(err) = pipeline.refresh_queue_metrics().await {
        // The rest is served: a scrape during a NATS outage still sees the process.
        warn!(error = %ErrorChain(&err), "queue figures not read for /metrics");
    }
    Response::builder()
        .content_type(jetscribe_metrics::CONTENT_TYPE)
        .body(jetscribe_metrics::encode())
}

/// Serves `GET /metrics` alone on `addr` until `shutdown`.
pub async fn metrics_server(
    addr: String,
    pipeline: Pipeline,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Route::new()
        .at("/metrics", get(serve_metrics))
        .data(pipeline);
    info!(%addr, "metrics listening");
    Server::new(TcpListener::bind(addr.clone()))
        .run_with_graceful_shutdown(app, async move { shutdown.cancelled().await }, None)
        .await
}
