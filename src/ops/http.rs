//! The HTTP endpoint of `[metrics] listen`: `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /livez` (the process answers) and `GET /readyz` (200, or 500 with what is wrong,
//! `ops::health`). HTTP/1.1 without keep-alive: each connection carries one request,
//! which must arrive and be answered within `REQUEST_TIMEOUT`, and at most
//! `MAX_CONNECTIONS` are served at once; a connection over the bound is closed unread.
//! Gauges that need a look at the store or the breakers are refreshed on each scrape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::health;
use super::metrics::{CONTENT_TYPE, Metrics};
use crate::radius::listener::Server;

/// Connections served at once; Prometheus and a health checker need a handful.
const MAX_CONNECTIONS: usize = 16;
/// The longest one connection may take, request and reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the endpoint, so that a taken port stops start-up like a RADIUS port does.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the endpoint until `shutdown`.
pub async fn run(
    listener: TcpListener,
    server: Arc<Server>,
    config_path: String,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let state = Arc::new((server, config_path));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: pause and go on.
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(peer = %peer, "metrics connection refused: too many at once");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&request, &state.0, &state.1).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "metrics connection failed")
                }
                Err(_) => tracing::debug!(peer = %peer, "metrics connection timed out"),
            }
        });
    }
}

async fn answer(
    request: &Request<Incoming>,
    server: &Server,
    config_path: &str,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let readiness = health::check(&server.live(), config_path).await;
            let status = match readiness.ready {
                true => StatusCode::OK,
                false => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut body = readiness.lines.join("\n");
            body.push('\n');
            text(status, body)
        }
        "/metrics" => {
            // The gauges read at scrape time; readiness itself does not matter here.
            health::check(&server.live(), config_path).await;
            reply(StatusCode::OK, CONTENT_TYPE, Metrics::global().render())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /livez or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
