//! Distributed tracing and JSON logs across real processes: a request through the `signpost
//! gateway` binary to a service that calls a second one with the SDK's `ServiceClient` makes one
//! trace (gateway → front → client attempt → users) whose spans the OTLP receiver in this
//! process gets from both sides; the agent's API spans carry their `raft.commit` child; and the
//! gateway's and the agent's `--log-format json` lines parse, the access log line carrying the
//! request's trace id.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::Context;
use serde_json::{json, Value};
use signpost_client::client::{ServiceClient, StaticInstances};
use signpost_client::Instance;
use signpost_testkit::otlp::{OtlpReceiver, ReceivedSpan};

use crate::harness::{client, free_port, poll_until, Agent, BIN};

/// Kills the gateway process if the test ends without stopping it.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SPANS: Duration = Duration::from_secs(30);

/// A test service's server span around each request, continuing the caller's W3C context, as
/// an instrumented service would.
async fn server_span(req: Request, next: Next) -> Response {
    let parent = signpost_telemetry::propagation::extract_with(&Context::new(), req.headers());
    let tracer = opentelemetry::global::tracer("e2e-services");
    let span = tracer
        .span_builder(format!("{} {}", req.method(), req.uri().path()))
        .with_kind(SpanKind::Server)
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = next.run(req).with_context(cx.clone()).await;
    cx.span().end();
    response
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app.layer(axum::middleware::from_fn(server_span));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn instance(service: &str, addr: SocketAddr) -> Instance {
    Instance {
        id: format!("{service}-1"),
        service: service.into(),
        address: addr.ip().to_string(),
        port: addr.port(),
        tags: Vec::new(),
        metadata: Default::default(),
        weight: 100,
        state: Default::default(),
        maintenance: None,
    }
}

fn parent_of<'a>(spans: &'a [ReceivedSpan], child: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == child.parent_span_id)
}

#[tokio::test]
async fn one_request_is_one_trace_across_gateway_and_services_and_its_logs_carry_it() {
    let receiver = OtlpReceiver::start().await;
    // This process's services export to the receiver too.
    let provider = signpost_telemetry::provider(&signpost_telemetry::Resolved {
        endpoint: receiver.endpoint(),
        sampling_ratio: 1.0,
        service_name: "e2e-services".into(),
    })
    .unwrap();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let dir = tempfile::tempdir().unwrap();
    let telemetry = |name: &str| {
        format!(
            "[log]\nformat = \"json\"\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"{name}\"\n",
            receiver.endpoint()
        )
    };
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(&agent_config, telemetry("agent")).unwrap();
    let mut agent = Agent::start(
        dir.path(),
        [
            "--dev".as_ref(),
            "--config".as_ref(),
            agent_config.as_os_str(),
        ],
    )
    .await;

    // users: a plain service; front: calls users through the SDK.
    let users = serve(Router::new().route(
        "/users/1",
        get(|| async { Json(json!({"id": 1, "name": "ada"})) }),
    ))
    .await;
    let users_client = ServiceClient::builder(StaticInstances::new(
        "users",
        vec![instance("users", users)],
    ))
    .build();
    let hello = get(|State(users): State<ServiceClient>| async move {
        let user: Value = users.get("/users/1").await.expect("users answers");
        Json(json!({"hello": user["name"]}))
    });
    let front = serve(
        Router::new()
            .route("/front/hello", hello.clone())
            .route("/flaky/hello", hello)
            .with_state(users_client),
    )
    .await;
    // flaky: front, and an instance nobody listens on (its attempts fail to connect and are
    // retried on front).
    for (id, port) in [("flaky-live", front.port()), ("flaky-dead", free_port())] {
        let (status, _) = agent
            .register(
                "flaky",
                &json!({"id": id, "address": "127.0.0.1", "port": port}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = agent
        .register(
            "front",
            &json!({"id": "front-1", "address": "127.0.0.1", "port": front.port()}),
        )
        .await;
    assert_eq!(status, 201);

    let (listen, admin) = (free_port(), free_port());
    let gateway_config = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nworkers = 1\n{}[registry]\naddrs = [\"{}\"]\n[[route]]\nprefix = \"/front\"\nservice = \"front\"\n[[route]]\nprefix = \"/flaky\"\nservice = \"flaky\"\n",
            telemetry("gateway"),
            agent.base_url()
        ),
    )
    .unwrap();
    let stdout = dir.path().join("gateway.stdout");
    let mut gateway = Gateway(
        Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&gateway_config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(dir.path().join("gateway.stderr")).unwrap())
            .spawn()
            .expect("spawn signpost gateway"),
    );
    let logs = || std::fs::read_to_string(&stdout).unwrap_or_default();

    let http = client();
    let url = format!("http://127.0.0.1:{listen}/front/hello");
    poll_until(
        Duration::from_secs(30),
        "the gateway routes to front",
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let resp = http.get(&url).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        },
    )
    .await;

    // The traced request: the caller's span continues through every hop.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = http
        .get(&url)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "e2e=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "gateway log:\n{}", logs());
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"hello": "ada"}));

    let flaky = format!("http://127.0.0.1:{listen}/flaky/hello");
    poll_until(
        Duration::from_secs(30),
        "the gateway routes to flaky",
        || {
            let (http, flaky) = (http.clone(), flaky.clone());
            async move {
                let resp = http.get(&flaky).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        },
    )
    .await;
    // Through flaky, round robin sends one of two requests to the dead instance first.
    let flaky_traces = [
        "33333333333333333333333333333333",
        "44444444444444444444444444444444",
    ];
    for trace in flaky_traces {
        let resp = http
            .get(&flaky)
            .header("traceparent", format!("00-{trace}-{caller_span}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "gateway log:\n{}", logs());
    }

    // A request without a traceparent gets a trace of its own.
    let untraced = http.get(&url).send().await.unwrap();
    assert_eq!(untraced.status(), 200);

    // The agent: a native and a Consul registration, each under a caller's span.
    let native_trace = "11111111111111111111111111111111";
    let consul_trace = "22222222222222222222222222222222";
    let native = http
        .post(agent.url("/api/v1/services/web/instances"))
        .header("traceparent", format!("00-{native_trace}-{caller_span}-01"))
        .json(&json!({"id": "web-1", "address": "127.0.0.1", "port": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(native.status(), 201);
    let consul = http
        .put(agent.url("/v1/agent/service/register"))
        .header("traceparent", format!("00-{consul_trace}-{caller_span}-01"))
        .json(&json!({"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": 5432}))
        .send()
        .await
        .unwrap();
    assert_eq!(consul.status(), 200);

    // Stop both processes (SIGTERM: they flush their spans) and flush our own.
    assert!(Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let exit = poll_until(Duration::from_secs(15), "the gateway to exit", || {
        let exited = gateway.0.try_wait().ok().flatten();
        async move { exited }
    })
    .await;
    assert!(exit.success(), "gateway log:\n{}", logs());
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(15)).await.is_some());
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .unwrap();

    // gateway (server, child of the caller) → front (server) → GET users (client, the SDK's
    // attempt) → users (server).
    let users_span = receiver
        .wait_for("the users service's span", SPANS, |s| {
            s.trace_id == trace_id && s.name == "GET /users/1"
        })
        .await;
    let gateway_span = receiver
        .wait_for("the gateway's span", SPANS, |s| {
            s.trace_id == trace_id && s.service == "gateway"
        })
        .await;
    let spans: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    println!("{}", receiver.tree(trace_id));
    let attempt = parent_of(&spans, &users_span).expect("users' parent is in the trace");
    assert_eq!(attempt.name, "GET users");
    assert_eq!(attempt.kind, 3, "a client span");
    assert_eq!(attempt.attr("signpost.instance"), Some("users-1"));
    assert_eq!(attempt.attr("signpost.attempt"), Some("1"));
    let front_span = parent_of(&spans, attempt).expect("the attempt's parent is in the trace");
    assert_eq!(front_span.name, "GET /front/hello");
    assert_eq!(front_span.parent_span_id, gateway_span.span_id);
    assert_eq!(gateway_span.parent_span_id, caller_span);
    assert_eq!(gateway_span.name, "GET /front");
    assert_eq!(gateway_span.kind, 2, "a server span");
    assert_eq!(gateway_span.attr("signpost.route"), Some("/front"));
    assert_eq!(
        gateway_span.attr("signpost.upstream"),
        Some(&*front.to_string())
    );
    assert_eq!(gateway_span.attr("signpost.attempts"), Some("1"));
    assert_eq!(gateway_span.attr("http.response.status_code"), Some("200"));
    // The untraced request started a trace of its own at the gateway.
    assert!(receiver
        .spans()
        .iter()
        .any(|s| s.service == "gateway" && s.trace_id != trace_id && s.parent_span_id.is_empty()));

    // The retried request: two attempts, the failed one and its retry decision as an event.
    let retried = receiver
        .wait_for("the retried request's gateway span", SPANS, |s| {
            flaky_traces.contains(&s.trace_id.as_str())
                && s.service == "gateway"
                && s.attr("signpost.attempts") == Some("2")
        })
        .await;
    assert_eq!(retried.events, ["retry"], "{retried:?}");
    assert_eq!(retried.attr("signpost.upstream"), Some(&*front.to_string()));
    assert_eq!(retried.attr("http.response.status_code"), Some("200"));
    println!("{}", receiver.tree(&retried.trace_id));

    // The agent: server spans (native, Consul) with their raft.commit children.
    for (trace, route) in [
        (native_trace, "POST /api/v1/services/{service}/instances"),
        (consul_trace, "PUT /v1/agent/service/register"),
    ] {
        let server = receiver
            .wait_for(route, SPANS, |s| s.trace_id == trace && s.name == route)
            .await;
        assert_eq!(server.service, "agent");
        assert_eq!(server.parent_span_id, caller_span);
        let commit = receiver
            .wait_for("raft.commit", SPANS, |s| {
                s.trace_id == trace && s.name == "raft.commit"
            })
            .await;
        assert_eq!(commit.parent_span_id, server.span_id, "{route}");
        println!("{}", receiver.tree(trace));
    }

    // JSON logs: every line parses; the access log line of the traced request carries its
    // trace id.
    let lines: Vec<Value> = logs()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "signpost_gateway::access" && l["trace_id"] == trace_id)
        .unwrap_or_else(|| panic!("no access log line with the trace id:\n{}", logs()));
    println!("{access}");
    assert_eq!(access["span_id"], gateway_span.span_id.as_str());
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["route"], "/front");
    assert_eq!(access["level"], "INFO");
    for line in agent.stdout().lines() {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(parsed["time"].is_string() && parsed["message"].is_string());
    }
    assert!(agent.stdout().contains("signpost agent ready"));
}
