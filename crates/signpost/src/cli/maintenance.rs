//! `maintenance SERVICE ID --enable|--disable [--reason TEXT]`.

use super::agent::Agent;
use super::render::{print_json_pretty, write_stdout};

/// Puts an instance into maintenance or takes it out; an unknown instance is an error (404).
pub(super) async fn maintenance(
    agent: &Agent,
    service: &str,
    id: &str,
    enable: bool,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let instance = agent
        .registry
        .set_maintenance(service, id, enable, reason)
        .await
        .map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(&instance);
    }
    let line = match &instance.maintenance {
        Some(m) if m.reason.is_empty() => format!("{service}/{id} is in maintenance\n"),
        Some(m) => format!("{service}/{id} is in maintenance: {}\n", m.reason),
        None => format!("{service}/{id} is out of maintenance\n"),
    };
    write_stdout(&line)
}
