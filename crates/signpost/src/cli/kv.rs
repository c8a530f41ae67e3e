//! `signpost kv get|put|delete|list|watch`.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use signpost_api::KvEntry;
use signpost_client::backoff::{Backoff, Jitter, Reconnect};
use signpost_client::registry::signpost::KvWrite;
use signpost_client::registry::RegistryError;

use super::agent::Agent;
use super::render::{format_table, print_json_pretty, warn, write_stdout};
use super::KvCommand;

/// How long one blocking read of `kv watch` waits on the agent.
const KV_WATCH_WAIT: Duration = Duration::from_secs(300);

/// Runs one `kv` subcommand.
pub(super) async fn kv(agent: &Agent, cmd: KvCommand, json: bool) -> anyhow::Result<()> {
    let registry = &agent.registry;
    match cmd {
        KvCommand::Get { key } => {
            let entry = registry.kv_get(&key).await.map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&entry);
            }
            write_stdout(&format!("{}\n", text(&entry)?))
        }
        KvCommand::Put {
            key,
            value,
            cas,
            flags,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("cannot read the value from standard input")?;
                buf
            } else {
                value.into_bytes()
            };
            let entry = registry
                .kv_put(&key, value, KvWrite { cas, flags })
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&entry);
            }
            write_stdout(&format!("set {key} (index {})\n", entry.modify_index))
        }
        KvCommand::Delete { key, recurse, cas } => {
            registry
                .kv_delete(&key, recurse, cas)
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(
                    &serde_json::json!({ "deleted": key, "recurse": recurse }),
                );
            }
            write_stdout(&format!(
                "deleted {key}{}\n",
                if recurse { " (recursively)" } else { "" }
            ))
        }
        KvCommand::List { prefix } => {
            let entries = registry
                .kv_list(&prefix)
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&entries);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| Ok(vec![e.key.clone(), text(e)?, e.modify_index.to_string()]))
                .collect::<anyhow::Result<_>>()?;
            write_stdout(&format_table(&["KEY", "VALUE", "INDEX"], &rows))
        }
        KvCommand::Watch { key } => {
            tokio::select! {
                res = kv_watch(agent, &key, json) => res,
                sig = tokio::signal::ctrl_c() => sig.context("cannot listen for Ctrl-C"),
            }
        }
    }
}

/// An entry's value as text (lossy for bytes that are not UTF-8).
fn text(entry: &KvEntry) -> anyhow::Result<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&entry.value)
        .map_err(|e| anyhow!("the agent sent a value that is not base64: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Follows a key with blocking queries, printing its value at start and on every change.
/// An unreachable agent is retried with backoff; any other failure ends the command.
async fn kv_watch(agent: &Agent, key: &str, json: bool) -> anyhow::Result<()> {
    let mut index = 0u64;
    let mut backoff = Reconnect::new(Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
        jitter: Jitter::None,
    });
    loop {
        let (new_index, entry) = match agent.registry.kv_wait(key, index, KV_WATCH_WAIT).await {
            Ok(answer) => answer,
            Err(e @ RegistryError::Unavailable { .. }) => {
                warn(&format!("{}; retrying", agent.describe(&e)));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => return Err(agent.error(e)),
        };
        if new_index == index {
            continue;
        }
        index = new_index;
        backoff.reset();
        write_stdout(&format!(
            "{}\n",
            watch_line(key, index, entry.as_ref(), json)?
        ))?;
    }
}

/// One line of `kv watch`: the key's value (or that it is not set) at `index`.
fn watch_line(
    key: &str,
    index: u64,
    entry: Option<&KvEntry>,
    json: bool,
) -> anyhow::Result<String> {
    Ok(match (entry, json) {
        (None, true) => {
            serde_json::json!({ "index": index, "key": key, "deleted": true }).to_string()
        }
        (None, false) => format!("[index {index}] {key} is not set"),
        (Some(entry), true) => serde_json::json!({ "index": index, "entry": entry }).to_string(),
        (Some(entry), false) => format!("[index {index}] {key} = {}", text(entry)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines() {
        let entry: KvEntry = serde_json::from_str(
            r#"{"key":"app/color","value":"Ymx1ZQ==","flags":0,"create_index":5,"modify_index":6,"lock_index":0}"#,
        )
        .unwrap();
        assert_eq!(
            watch_line("app/color", 6, Some(&entry), false).unwrap(),
            "[index 6] app/color = blue"
        );
        assert_eq!(
            watch_line("app/color", 7, None, false).unwrap(),
            "[index 7] app/color is not set"
        );
        let line: serde_json::Value =
            serde_json::from_str(&watch_line("app/color", 6, Some(&entry), true).unwrap()).unwrap();
        assert_eq!(line["entry"]["modify_index"], 6);
        assert_eq!(
            watch_line("k", 8, None, true).unwrap(),
            r#"{"deleted":true,"index":8,"key":"k"}"#
        );
        let bad = KvEntry {
            value: "not base64!".into(),
            ..entry
        };
        assert!(text(&bad).is_err());
    }
}
