//! Worker threads (`Gateway::serve_workers`): listeners sharing one port, each worker with its
//! own runtime and idle upstream connections, and a shutdown that ends every worker; the idle
//! pool shrinking when traffic drops.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::sync::Barrier;

use crate::common::{eventually, raw_request, respond, AgentExt, Backend, TestAgent, TestGateway};

const CONFIG: &str = r#"
[[route]]
name = "echo"
prefix = "/"
service = "echo"
"#;

#[test]
fn worker_listeners_share_one_port() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let listeners = signpost_gateway::bind_workers("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_eq!(listeners.len(), 3);
    let port = listeners[0].local_addr().unwrap().port();
    assert_ne!(port, 0);
    for listener in &listeners {
        assert_eq!(listener.local_addr().unwrap().port(), port);
    }
}

#[tokio::test]
async fn workers_serve_clients_and_keep_their_own_upstream_connections() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("echo").await;
    agent
        .add_instance("echo", "e1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start_workers(&agent, CONFIG, 2).await;
    gw.wait_upstreams("echo", 1).await;

    // One request per fresh client connection, one after another: the kernel spreads the
    // connections over both workers' listeners, and a worker reuses only its own idle
    // upstream connection.
    for i in 0..32 {
        let req = Request::get(format!("/n/{i}"))
            .header("host", "workers.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = raw_request(gw.addr, req).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert!(resp.headers().contains_key("x-request-id"));
    }
    assert_eq!(backend.requests().len(), 32);
    let route = gw.route("echo").unwrap();
    assert_eq!(
        route.upstreams[0].idle_connections, 2,
        "each of the two workers keeps the connection it used"
    );

    // Shutting down ends both worker threads (serve_workers returns).
    gw.shutdown().await;
}

#[tokio::test]
async fn when_traffic_drops_the_pool_keeps_the_connection_used_last_and_closes_the_rest() {
    let agent = TestAgent::start().await;
    // Requests to /hold wait until four of them are in: four upstream connections at once.
    let barrier = Arc::new(Barrier::new(4));
    let backend = Backend::start(false, move |req| {
        let barrier = barrier.clone();
        async move {
            if req.uri().path() == "/hold" {
                barrier.wait().await;
            }
            respond(200, "ok")
        }
    })
    .await;
    agent
        .add_instance("echo", "e1", backend.port(), json!({}))
        .await;
    let config = format!("{CONFIG}\n[upstream]\nidle_timeout = \"1s\"\n");
    let gw = TestGateway::start(&agent, &config).await;
    gw.wait_upstreams("echo", 1).await;

    let held = (0..4).map(|_| gw.client.get(gw.url("/hold")).send());
    for resp in futures::future::join_all(held).await {
        assert_eq!(resp.unwrap().status(), 200);
    }
    assert_eq!(gw.route("echo").unwrap().upstreams[0].idle_connections, 4);

    // Light traffic, one request at a time: it keeps reusing the connection on top, and the
    // sweeper (every 500 ms) closes the three below it once they sat through two sweeps.
    eventually("the idle pool shrinks to the connection in use", || async {
        let resp = gw.client.get(gw.url("/light")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        gw.route("echo").unwrap().upstreams[0].idle_connections == 1
    })
    .await;
}
