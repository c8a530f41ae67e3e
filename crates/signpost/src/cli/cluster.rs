//! `members`, `join`, `leave` and `remove`.

use signpost_api::{JoinRequest, Members};

use super::agent::Agent;
use super::render::{format_table, print_json_pretty, write_stdout};

/// `signpost members`.
pub(super) async fn members(agent: &Agent, json: bool) -> anyhow::Result<()> {
    let members = agent.registry.members().await.map_err(|e| agent.error(e))?;
    print_members(&members, json)
}

/// `signpost join --node-id N --raft-addr R --http-addr H`: the members after.
pub(super) async fn join(agent: &Agent, request: &JoinRequest, json: bool) -> anyhow::Result<()> {
    let members = agent
        .registry
        .join(request)
        .await
        .map_err(|e| agent.error(e))?;
    print_members(&members, json)
}

/// `signpost remove N`: the members after.
pub(super) async fn remove(agent: &Agent, node_id: u64, json: bool) -> anyhow::Result<()> {
    let members = agent
        .registry
        .remove_member(node_id)
        .await
        .map_err(|e| agent.error(e))?;
    print_members(&members, json)
}

/// `signpost leave`: takes the agent at `--addr` out of its cluster.
pub(super) async fn leave(agent: &Agent, json: bool) -> anyhow::Result<()> {
    let left = agent.registry.leave().await.map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(&left);
    }
    write_stdout(&format!("node {} left the cluster\n", left.left))
}

fn print_members(members: &Members, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json_pretty(members);
    }
    write_stdout(&render_members(members))
}

/// The members table; `-` for what is not known.
fn render_members(members: &Members) -> String {
    let known = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = members
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.role.clone(),
                m.http_addr.clone(),
                m.raft_addr.clone(),
                known(m.matched_index),
                known(m.lag),
            ]
        })
        .collect();
    format_table(&["ID", "ROLE", "HTTP", "RAFT", "MATCHED", "LAG"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_table() {
        let members: Members = serde_json::from_str(
            r#"{"leader":1,"term":2,"members":[
                {"id":1,"raft_addr":"127.0.0.1:9001","http_addr":"127.0.0.1:8501","role":"leader","voter":true,"matched_index":40,"lag":0},
                {"id":2,"raft_addr":"127.0.0.1:9002","http_addr":"127.0.0.1:8502","role":"learner","voter":false,"matched_index":null,"lag":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            render_members(&members),
            "ID  ROLE     HTTP            RAFT            MATCHED  LAG\n\
             1   leader   127.0.0.1:8501  127.0.0.1:9001  40       0\n\
             2   learner  127.0.0.1:8502  127.0.0.1:9002  -        -\n"
        );
    }
}
