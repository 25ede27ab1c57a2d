//! `bare-hyper-proxy LISTEN UPSTREAM`: forwards every request to UPSTREAM through hyper-util's
//! pooled client on one current-thread runtime, as one Portcullis worker does, and does nothing
//! else: no routing, headers, limits, WAF or events. bench/proxy measures it beside nginx and
//! Portcullis, so the gap between Portcullis and this is what Portcullis' own stages cost.

use std::error::Error;

use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare-hyper-proxy LISTEN UPSTREAM".into());
    };
    let listen: std::net::SocketAddr = listen.parse()?;
    let upstream: Uri = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    forward(client.clone(), upstream.clone(), request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// An upstream failure is returned as the service's error, which ends the connection: the
/// bench's upstream always answers.
async fn forward(
    client: Upstream,
    upstream: Uri,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut parts = upstream.into_parts();
    parts.path_and_query = request.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    client.request(request).await
}
