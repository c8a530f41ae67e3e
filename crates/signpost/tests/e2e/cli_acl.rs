//! The CLI's ACL commands against the real binary with `[acl] enabled = true`: bootstrap,
//! a policy from an HCL file, a token carrying it, that token used and refused, `token self`,
//! and deletion.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{poll_until, run_signpost, Agent, Run, READY_TIMEOUT};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

async fn cli(dir: &Path, addr: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--addr", addr]);
    if let Some(token) = token {
        all.extend(["--token", token]);
    }
    run_signpost(dir, &all, CLI_TIMEOUT).await
}

fn ok_json(run: &Run) -> Value {
    assert!(
        run.status.success(),
        "failed: {}\n{}",
        run.stdout,
        run.stderr
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

#[tokio::test]
async fn cli_bootstraps_acls_makes_a_token_and_is_refused_where_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        "[acl]\nenabled = true\ndefault_policy = \"deny\"\n",
    )
    .unwrap();
    // The harness's readiness probe reads /api/v1/agent/self, which needs a token here: wait
    // until the agent answers the CLI at all (a refusal).
    let agent = Agent::spawn(
        dir.path(),
        [
            "--dev".as_ref(),
            "--no-dns".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    let addr = agent.base_url();
    let d = dir.path();
    poll_until(READY_TIMEOUT, "the agent to answer the CLI", || async {
        let run = cli(d, &addr, None, &["acl", "policy", "list"]).await;
        run.stderr.contains("403 Forbidden").then_some(())
    })
    .await;

    let boot = ok_json(&cli(d, &addr, None, &["acl", "bootstrap", "--json"]).await);
    let management = boot["SecretID"].as_str().unwrap().to_string();
    let again = cli(d, &addr, None, &["acl", "bootstrap"]).await;
    assert!(!again.status.success(), "a second bootstrap is refused");
    assert!(again.stderr.contains("403 Forbidden"), "{}", again.stderr);

    let rules = dir.path().join("web.hcl");
    std::fs::write(&rules, "service \"web\" {\n  policy = \"write\"\n}\n").unwrap();
    let rules_arg = format!("@{}", rules.display());
    let m = Some(management.as_str());
    let policy = ok_json(
        &cli(
            d,
            &addr,
            m,
            &[
                "acl",
                "policy",
                "create",
                "--name",
                "web-write",
                "--rules",
                &rules_arg,
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(policy["Name"], "web-write");
    let token = ok_json(
        &cli(
            d,
            &addr,
            m,
            &[
                "acl",
                "token",
                "create",
                "--policy-name",
                "web-write",
                "--ttl",
                "1h",
                "--description",
                "ci",
                "--json",
            ],
        )
        .await,
    );
    let secret = token["SecretID"].as_str().unwrap().to_string();
    let accessor = token["AccessorID"].as_str().unwrap().to_string();
    let t = Some(secret.as_str());

    // The token may register "web" but not "api"; without a token nothing is allowed.
    let reg = |service: &'static str| {
        [
            "register",
            service,
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--ttl",
            "1h",
        ]
    };
    let run = cli(d, &addr, t, &reg("web")).await;
    assert!(run.status.success(), "{}", run.stderr);
    let run = cli(d, &addr, t, &reg("api")).await;
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("403 Forbidden") && run.stderr.contains("service:write"),
        "{}",
        run.stderr
    );
    let run = cli(d, &addr, None, &reg("web")).await;
    assert!(!run.status.success(), "the anonymous token may not write");

    let me = ok_json(&cli(d, &addr, t, &["acl", "token", "self", "--json"]).await);
    assert_eq!(me["AccessorID"], accessor.as_str());
    assert!(me.get("SecretID").is_none(), "reads never show the secret");
    let list = ok_json(&cli(d, &addr, m, &["acl", "token", "list", "--json"]).await);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["AccessorID"] == accessor.as_str()));

    let run = cli(d, &addr, m, &["acl", "token", "delete", &accessor]).await;
    assert!(run.status.success(), "{}", run.stderr);
    let run = cli(d, &addr, t, &["acl", "token", "self"]).await;
    assert!(!run.status.success(), "a deleted token stops working");
    let run = cli(d, &addr, m, &["acl", "policy", "delete", "web-write"]).await;
    assert!(run.status.success(), "{}", run.stderr);
    let policies = ok_json(&cli(d, &addr, m, &["acl", "policy", "list", "--json"]).await);
    assert!(!policies
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["Name"] == "web-write"));
}
