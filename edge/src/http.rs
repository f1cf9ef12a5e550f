//! The HTTP/1.1 server under the edge's routes. It is hyper's server with a
//! timer, so a connection that does not finish its request headers within
//! the handshake timeout is dropped (axum's `serve` sets no such timeout).
//! WebSockets only need HTTP/1.1 upgrades, so HTTP/2 is not offered.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts connections until `stop` is cancelled. Connections already
/// accepted finish on their own (upgraded WebSockets are drained by the edge).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    send_buffer_bytes: usize,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if send_buffer_bytes > 0
            && let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer_bytes)
        {
            tracing::debug!(%peer, error = %e, "could not set the socket's send buffer");
        }
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
}
