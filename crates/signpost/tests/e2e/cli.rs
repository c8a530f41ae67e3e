//! The command-line client against a real agent.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, run_signpost, Agent, Run};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn cli(agent: &Agent, args: &[&str]) -> Run {
    let base = agent.base_url();
    let mut all = args.to_vec();
    all.extend(["--addr", &base]);
    let dir = tempfile::tempdir().unwrap();
    let run = run_signpost(dir.path(), &all, CLI_TIMEOUT).await;
    assert!(
        run.status.success(),
        "`signpost {}` failed ({}):\nstdout: {}\nstderr: {}",
        all.join(" "),
        run.status,
        run.stdout,
        run.stderr
    );
    run
}

pub(crate) fn parse(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// A dev agent holding two passing `web` instances, `w1` and `w2`.
pub(crate) async fn agent_with_web(dir: &tempfile::TempDir) -> Agent {
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    for (id, port) in [("w1", 7001), ("w2", 7002)] {
        let (status, body) = agent
            .register(
                "web",
                &json!({"id": id, "address": "10.2.0.1", "port": port}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    agent
}

#[tokio::test]
async fn cli_talks_to_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_web(&dir).await;

    // register through the CLI, seen through the API
    let run = cli(
        &agent,
        &[
            "register",
            "db",
            "--address",
            "10.3.0.1",
            "--port",
            "5432",
            "--id",
            "d1",
            "--tag",
            "primary",
            "--ttl",
            "30s",
        ],
    )
    .await;
    assert!(run.stdout.contains("registered db/d1"), "{}", run.stdout);
    let d1 = agent.get_json("/api/v1/services/db/instances/d1").await;
    assert_eq!(d1["port"], 5432);
    assert_eq!(d1["tags"], json!(["primary"]));
    assert_eq!(d1["check"]["ttl"], "30s");

    // services --json: the agent's listing
    let services = parse(&cli(&agent, &["services", "--json"]).await);
    let names: Vec<&str> = services
        .as_array()
        .unwrap_or_else(|| panic!("services --json is not an array: {services}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{services}");
    assert!(
        names.contains(&"web") && names.contains(&"db"),
        "{services}"
    );
    let web = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web["instances"]["passing"], 2, "{web}");

    // services as a table
    let table = cli(&agent, &["services"]).await.stdout;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains(" 2 ")),
        "{table}"
    );

    // instances --json
    let list = parse(&cli(&agent, &["instances", "web", "--json"]).await);
    let mut ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["w1", "w2"]);

    // deregister through the CLI
    let run = cli(&agent, &["deregister", "web", "w1"]).await;
    assert!(run.stdout.contains("deregistered web/w1"), "{}", run.stdout);
    let left = agent.instances("web").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], "w2");

    // errors from the agent are reported, with a non-zero exit
    let base = agent.base_url();
    let run = run_signpost(
        dir.path(),
        &["deregister", "web", "nope", "--addr", &base],
        CLI_TIMEOUT,
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("404"), "{}", run.stderr);
}

#[tokio::test]
async fn cli_reports_an_unreachable_agent() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("http://127.0.0.1:{}", free_port());
    let run = run_signpost(dir.path(), &["services", "--addr", &addr], CLI_TIMEOUT).await;
    assert!(!run.status.success(), "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains("cannot reach the agent") && run.stderr.contains(&addr),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn cli_kv_put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    let run = cli(&agent, &["kv", "put", "app/color", "blue"]).await;
    assert!(run.stdout.starts_with("set app/color"), "{}", run.stdout);
    cli(&agent, &["kv", "put", "app/size", "xl", "--flags", "3"]).await;
    let run = cli(&agent, &["kv", "get", "app/color"]).await;
    assert_eq!(run.stdout, "blue\n");
    let run = cli(&agent, &["kv", "get", "app/size", "--json"]).await;
    assert_eq!(parse(&run)["flags"], 3);
    let run = cli(&agent, &["kv", "list", "app/"]).await;
    assert!(
        run.stdout.contains("app/color") && run.stdout.contains("xl"),
        "{}",
        run.stdout
    );

    // A failed compare-and-set exits non-zero and changes nothing.
    let mut args = vec!["kv", "put", "app/color", "red", "--cas", "1"];
    let base = agent.base_url();
    args.extend(["--addr", &base]);
    let failed = run_signpost(dir.path(), &args, CLI_TIMEOUT).await;
    assert!(!failed.status.success());
    assert!(failed.stderr.contains("cas"), "{}", failed.stderr);
    assert_eq!(
        cli(&agent, &["kv", "get", "app/color"]).await.stdout,
        "blue\n"
    );

    cli(&agent, &["kv", "delete", "app/", "--recurse"]).await;
    let run = cli(&agent, &["kv", "list", "app/", "--json"]).await;
    assert_eq!(parse(&run), json!([]));
}
