//! The backend `bench/gateway.sh` proxies to: answers every request with a short fixed body,
//! as cheaply as hyper allows (HTTP/1.1 keep-alive, one thread by default).
//!
//! Usage: `gateway-bench-backend ADDR [NAME] [THREADS]`, e.g.
//! `gateway-bench-backend 127.0.0.1:9001 a 1`.
#![forbid(unsafe_code)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: gateway-bench-backend ADDR [NAME] [THREADS]");
        std::process::exit(2);
    };
    let name = args.next().unwrap_or_else(|| "backend".to_string());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = runtime.unwrap_or_else(|e| {
        eprintln!("cannot start the runtime: {e}");
        std::process::exit(1);
    });
    let body = Bytes::from(format!("hello from {name}\n"));
    if let Err(e) = runtime.block_on(serve(addr, body)) {
        eprintln!("gateway-bench-backend: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: String, body: Bytes) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "gateway-bench-backend listening on {}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let mut response = Response::new(Full::new(body.clone()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
