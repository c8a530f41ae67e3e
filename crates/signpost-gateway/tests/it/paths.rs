//! Paths and hosts are matched the way they are forwarded (issue 14 §6): the canonical path
//! (dot segments resolved, `%2e` decoded, `//` collapsed), encoded separators refused, the
//! absolute-form authority as the host, and untrusted forwarding headers replaced.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::common::{raw_request, AgentExt, Backend, TestAgent, TestGateway};

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "gw.local")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn paths_are_normalized_before_matching_and_forwarding() {
    let agent = TestAgent::start().await;
    let public = Backend::echo("public").await;
    agent
        .add_instance("public", "p-1", public.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "[[route]]\nprefix = \"/public\"\nservice = \"public\"\n",
    )
    .await;
    gw.wait_upstreams("/public", 1).await;

    // Out of the prefix by dot segments, plain or encoded: no route, nothing forwarded.
    for escape in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/x/../../admin",
    ] {
        let resp = raw_request(gw.addr, get(escape)).await;
        assert_eq!(resp.status(), 404, "{escape}");
        let body: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body["kind"], "no_route", "{escape}: {body}");
    }
    assert!(
        public.requests().is_empty(),
        "reached the upstream: {:?}",
        public.requests()
    );

    // Inside the prefix: the upstream gets the canonical path, the query untouched.
    for (sent, seen) in [
        ("/public//a///b", "/public/a/b"),
        ("/public/./x/../y", "/public/y"),
        ("/public/%7euser/%61?q=%2e%2e", "/public/~user/a?q=%2e%2e"),
        ("//public/a", "/public/a"),
    ] {
        let resp = raw_request(gw.addr, get(sent)).await;
        assert_eq!(resp.status(), 200, "{sent}");
        let body: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body["uri"], seen, "{sent}");
    }

    // Separators in disguise, bad escapes and climbing above the root: 400 with a JSON body.
    let before = public.requests().len();
    for bad in [
        "/public/..%2fadmin",
        "/public/a%2Fb",
        "/public/a%5cb",
        "/public/a%zz",
        "/public/../../etc",
    ] {
        let resp = raw_request(gw.addr, get(bad)).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body["kind"], "bad_path", "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("path"), "{body}");
    }
    assert_eq!(public.requests().len(), before);
    let metrics = gw
        .client
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("signpost_gateway_errors_total{route=\"\",kind=\"bad_path\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_absolute_form_request_is_routed_and_forwarded_on_the_same_host() {
    let agent = TestAgent::start().await;
    let internal = Backend::echo("internal").await;
    let public = Backend::echo("public").await;
    agent
        .add_instance("internal", "i-1", internal.port(), json!({}))
        .await;
    agent
        .add_instance("public", "p-1", public.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "[[route]]\nhost = \"internal.example\"\nprefix = \"/\"\nservice = \"internal\"\n\
         [[route]]\nprefix = \"/\"\nservice = \"public\"\n",
    )
    .await;
    gw.wait_upstreams("internal.example/", 1).await;
    gw.wait_upstreams("/", 1).await;

    let req = Request::get("http://internal.example/x")
        .header("host", "public.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw_request(gw.addr, req).await;
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body["backend"], "internal");
    assert_eq!(
        body["headers"]["host"], "internal.example",
        "the host routed on is the host forwarded"
    );
    assert_eq!(body["headers"]["x-forwarded-host"], "internal.example");
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_headers_are_replaced() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("b").await;
    agent
        .add_instance("svc", "b-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"svc\"\n").await;
    gw.wait_upstreams("/", 1).await;
    let req = Request::get("/")
        .header("host", "gw.local")
        .header("x-forwarded-for", "192.0.2.1")
        .header("forwarded", "for=192.0.2.1;proto=https")
        .header("x-real-ip", "192.0.2.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw_request(gw.addr, req).await;
    let body: Value = serde_json::from_slice(resp.body()).unwrap();
    let seen = &body["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert!(seen.get("forwarded").is_none(), "{seen}");
}
