//! `signpost maintenance` against the real binary: the instance leaves the discovery listing
//! while staying registered, and comes back (Consul health and DNS are covered by the agent's
//! own suite, `crates/signpost-server/tests/it/lifecycle.rs`).

use crate::cli::{cli, parse};
use crate::harness::{run_signpost, Agent};

/// Ids in the default (discovery) listing.
async fn discovered(agent: &Agent) -> Vec<String> {
    let body = agent.get_json("/api/v1/services/web/instances").await;
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn cli_maintenance_takes_an_instance_out_of_discovery_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::cli::agent_with_web(&dir).await;

    let run = cli(
        &agent,
        &[
            "maintenance",
            "web",
            "w1",
            "--enable",
            "--reason",
            "disk swap",
        ],
    )
    .await;
    assert!(
        run.stdout.contains("web/w1 is in maintenance: disk swap"),
        "{}",
        run.stdout
    );
    assert_eq!(discovered(&agent).await, ["w2"]);
    let all = agent.instances("web").await;
    assert_eq!(all.len(), 2, "still registered: {all:?}");
    assert_eq!(all[0]["maintenance"]["reason"], "disk swap");

    let run = cli(&agent, &["maintenance", "web", "w1", "--disable", "--json"]).await;
    let instance = parse(&run);
    assert_eq!(instance["id"], "w1");
    assert!(instance.get("maintenance").is_none(), "{instance}");
    assert_eq!(discovered(&agent).await, ["w1", "w2"]);

    // Neither flag, or both, is a usage error; an unknown instance is the agent's 404.
    let base = agent.base_url();
    for args in [
        vec!["maintenance", "web", "w1"],
        vec!["maintenance", "web", "w1", "--enable", "--disable"],
        vec!["maintenance", "web", "nope", "--enable"],
    ] {
        let mut all = args.clone();
        all.extend(["--addr", &base]);
        let run = run_signpost(dir.path(), &all, std::time::Duration::from_secs(30)).await;
        assert!(!run.status.success(), "{args:?} succeeded: {}", run.stdout);
    }
    let run = run_signpost(
        dir.path(),
        &["maintenance", "web", "nope", "--enable", "--addr", &base],
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    assert_eq!(discovered(&agent).await, ["w1", "w2"]);
}
