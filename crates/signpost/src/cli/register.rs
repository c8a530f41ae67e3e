//! `register`: the registration body built from the flags, and the call.

use std::collections::BTreeMap;

use anyhow::bail;
use signpost_api::{Check, Registration};

use super::agent::Agent;
use super::render::{print_json_pretty, write_stdout};
use super::ClientCommand;

/// `signpost register SERVICE --address A --port P ...`.
pub(super) async fn register(agent: &Agent, cmd: ClientCommand, json: bool) -> anyhow::Result<()> {
    let (service, body) = register_body(cmd)?;
    let registered = agent
        .registry
        .register_instance(&service, &body)
        .await
        .map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(&registered.instance);
    }
    let how = if registered.created {
        " (created)"
    } else {
        " (replaced)"
    };
    let id = &registered.instance.id;
    write_stdout(&format!("registered {service}/{id}{how}\n"))
}

/// Turns the `--meta` pairs into a map, rejecting a key given twice.
fn collect_metadata(pairs: &[(String, String)]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("--meta {key:?} given more than once");
        }
    }
    Ok(map)
}

/// Builds the registration request from a `register` command: `(service, body)`. Only the
/// flags given are sent.
pub(super) fn register_body(cmd: ClientCommand) -> anyhow::Result<(String, Registration)> {
    let ClientCommand::Register {
        service,
        address,
        port,
        id,
        tags,
        meta,
        weight,
        ttl,
        http,
        tcp,
        interval,
        timeout,
        deregister_after,
    } = cmd
    else {
        bail!("internal error: not a register command");
    };
    let check = Check {
        ttl,
        http,
        tcp,
        interval,
        timeout,
        deregister_after,
        ..Check::default()
    };
    let body = Registration {
        id,
        address,
        port,
        tags,
        metadata: collect_metadata(&meta)?,
        weight,
        check: (check != Check::default()).then_some(check),
        status: None,
        state: None,
    };
    Ok((service, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::parse;

    #[test]
    fn duplicate_meta_keys_are_rejected() {
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert!(collect_metadata(&pairs)
            .unwrap_err()
            .to_string()
            .contains("\"a\""));
    }

    #[test]
    fn register_builds_the_request_body() {
        let cli = parse(&[
            "register",
            "users",
            "--address",
            "10.0.0.1",
            "--port",
            "8080",
            "--id",
            "u1",
            "--tag",
            "a",
            "--tag",
            "b",
            "--meta",
            "zone=eu",
            "--meta",
            "v=1=2",
            "--weight",
            "3",
            "--http",
            "http://10.0.0.1:8080/health",
            "--interval",
            "5s",
            "--timeout",
            "1s",
            "--deregister-after",
            "1m",
        ])
        .unwrap();
        let (service, body) = register_body(cli.cmd).unwrap();
        assert_eq!(service, "users");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "id": "u1", "address": "10.0.0.1", "port": 8080, "tags": ["a", "b"],
                "metadata": {"zone": "eu", "v": "1=2"}, "weight": 3,
                "check": {"http": "http://10.0.0.1:8080/health", "interval": "5s",
                          "timeout": "1s", "deregister_after": "1m"}
            })
        );

        let cli = parse(&["register", "users", "--address", "h", "--port", "1"]).unwrap();
        let (_, body) = register_body(cli.cmd).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"address": "h", "port": 1})
        );

        let cli = parse(&[
            "register",
            "users",
            "--address",
            "h",
            "--port",
            "1",
            "--ttl",
            "10s",
        ])
        .unwrap();
        let (_, body) = register_body(cli.cmd).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap()["check"],
            serde_json::json!({"ttl": "10s"})
        );
    }
}
