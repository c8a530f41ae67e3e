//! `signpost acl bootstrap`, `acl policy create|list|delete`, `acl token create|list|delete|self`:
//! Consul's ACL endpoints through the SDK. A refusal (403) prints the agent's message.

use anyhow::{anyhow, Context as _};
use signpost_client::registry::signpost::{AclPolicy, AclToken, NewPolicy, NewToken, PolicyLink};

use super::agent::Agent;
use super::render::{format_table, print_json_pretty, write_stdout};
use super::{AclCommand, AclPolicyCommand, AclTokenCommand};

/// Runs one `acl` subcommand.
pub(super) async fn acl(agent: &Agent, cmd: AclCommand, json: bool) -> anyhow::Result<()> {
    let registry = &agent.registry;
    match cmd {
        AclCommand::Bootstrap => {
            let token = registry.acl_bootstrap().await.map_err(|e| agent.error(e))?;
            print_token(&token, json)
        }
        AclCommand::Policy(AclPolicyCommand::Create {
            name,
            rules,
            description,
        }) => {
            let policy = NewPolicy {
                name,
                description,
                rules: read_rules(&rules)?,
            };
            let policy = registry
                .acl_policy_create(&policy)
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&policy);
            }
            write_stdout(&format!(
                "created policy {} (ID {})\n",
                policy.name, policy.id
            ))
        }
        AclCommand::Policy(AclPolicyCommand::List) => {
            let policies = registry.acl_policies().await.map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&policies);
            }
            write_stdout(&render_policies(&policies))
        }
        AclCommand::Policy(AclPolicyCommand::Delete { policy }) => {
            let policies = registry.acl_policies().await.map_err(|e| agent.error(e))?;
            let id = policy_id(&policies, &policy)
                .ok_or_else(|| anyhow!("no policy named or with the ID {policy:?}"))?;
            registry
                .acl_policy_delete(&id)
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&serde_json::json!({ "deleted": id }));
            }
            write_stdout(&format!("deleted policy {policy} (ID {id})\n"))
        }
        AclCommand::Token(AclTokenCommand::Create {
            policy_names,
            ttl,
            description,
        }) => {
            let token = NewToken {
                description,
                policies: policy_names
                    .into_iter()
                    .map(|name| PolicyLink {
                        id: None,
                        name: Some(name),
                    })
                    .collect(),
                expiration_ttl: ttl,
            };
            let token = registry
                .acl_token_create(&token)
                .await
                .map_err(|e| agent.error(e))?;
            print_token(&token, json)
        }
        AclCommand::Token(AclTokenCommand::List) => {
            let tokens = registry.acl_tokens().await.map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&tokens);
            }
            write_stdout(&render_tokens(&tokens))
        }
        AclCommand::Token(AclTokenCommand::Delete { accessor }) => {
            registry
                .acl_token_delete(&accessor)
                .await
                .map_err(|e| agent.error(e))?;
            if json {
                return print_json_pretty(&serde_json::json!({ "deleted": accessor }));
            }
            write_stdout(&format!("deleted token {accessor}\n"))
        }
        AclCommand::Token(AclTokenCommand::Itself) => {
            let token = registry
                .acl_token_self()
                .await
                .map_err(|e| agent.error(e))?;
            print_token(&token, json)
        }
    }
}

/// `--rules`: the text itself, `@FILE` for a file's contents, `-` for standard input.
fn read_rules(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the rules from standard input")?;
        return Ok(text);
    }
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rules file {path}")),
        None => Ok(arg.to_string()),
    }
}

/// The id of the policy named `name_or_id`, or with that id.
fn policy_id(policies: &[AclPolicy], name_or_id: &str) -> Option<String> {
    policies
        .iter()
        .find(|p| p.name == name_or_id)
        .or_else(|| policies.iter().find(|p| p.id == name_or_id))
        .map(|p| p.id.clone())
}

fn print_token(token: &AclToken, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json_pretty(token);
    }
    write_stdout(&render_token(token))
}

/// A policy link as `name` (or its id when the name is unknown).
fn link_name(link: &PolicyLink) -> &str {
    link.name
        .as_deref()
        .or(link.id.as_deref())
        .unwrap_or_default()
}

/// One token as `Field: value` lines, as Consul's CLI prints it; the secret only when the
/// agent sent it (at creation).
fn render_token(token: &AclToken) -> String {
    let mut rows: Vec<Vec<String>> = vec![vec!["AccessorID:".into(), token.accessor_id.clone()]];
    if let Some(secret) = &token.secret_id {
        rows.push(vec!["SecretID:".into(), secret.clone()]);
    }
    rows.push(vec!["Description:".into(), token.description.clone()]);
    if let Some(time) = &token.create_time {
        rows.push(vec!["Create Time:".into(), time.clone()]);
    }
    if let Some(time) = &token.expiration_time {
        rows.push(vec!["Expiration Time:".into(), time.clone()]);
    }
    rows.push(vec!["Policies:".into(), String::new()]);
    let mut out = format_table(&["", ""], &rows)
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default();
    for link in &token.policies {
        out.push_str(&format!(
            "   {} - {}\n",
            link.id.as_deref().unwrap_or("-"),
            link_name(link)
        ));
    }
    out
}

/// The policies table.
fn render_policies(policies: &[AclPolicy]) -> String {
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| vec![p.id.clone(), p.name.clone(), p.description.clone()])
        .collect();
    format_table(&["ID", "NAME", "DESCRIPTION"], &rows)
}

/// The tokens table.
fn render_tokens(tokens: &[AclToken]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let policies: Vec<&str> = t.policies.iter().map(link_name).collect();
            vec![
                t.accessor_id.clone(),
                t.description.clone(),
                policies.join(","),
                t.expiration_time.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    format_table(&["ACCESSOR", "DESCRIPTION", "POLICIES", "EXPIRES"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, name: &str) -> AclPolicy {
        AclPolicy {
            id: id.into(),
            name: name.into(),
            ..AclPolicy::default()
        }
    }

    #[test]
    fn policies_are_deleted_by_name_or_id() {
        let policies = [policy("p-1", "web"), policy("p-2", "p-1")];
        assert_eq!(policy_id(&policies, "web").as_deref(), Some("p-1"));
        // A name wins over an id that happens to be spelled the same.
        assert_eq!(policy_id(&policies, "p-1").as_deref(), Some("p-2"));
        assert_eq!(policy_id(&policies, "p-2").as_deref(), Some("p-2"));
        assert_eq!(policy_id(&policies, "nope"), None);
    }

    #[test]
    fn rules_come_inline_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.hcl");
        std::fs::write(&path, "service \"web\" { policy = \"write\" }\n").unwrap();
        assert_eq!(
            read_rules(&format!("@{}", path.display())).unwrap(),
            "service \"web\" { policy = \"write\" }\n"
        );
        assert_eq!(read_rules("key \"a\" {}").unwrap(), "key \"a\" {}");
        let err = read_rules("@/nonexistent/rules.hcl").unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/rules.hcl"),
            "{err:#}"
        );
    }

    #[test]
    fn tokens_render_with_their_policies() {
        let token = AclToken {
            accessor_id: "a-1".into(),
            secret_id: Some("s-1".into()),
            description: "ci".into(),
            policies: vec![PolicyLink {
                id: Some("p-1".into()),
                name: Some("web".into()),
            }],
            expiration_time: Some("2026-01-02T00:00:00Z".into()),
            ..AclToken::default()
        };
        assert_eq!(
            render_token(&token),
            "AccessorID:       a-1\n\
             SecretID:         s-1\n\
             Description:      ci\n\
             Expiration Time:  2026-01-02T00:00:00Z\n\
             Policies:\n   p-1 - web\n"
        );
        assert_eq!(
            render_tokens(&[token]),
            "ACCESSOR  DESCRIPTION  POLICIES  EXPIRES\n\
             a-1       ci           web       2026-01-02T00:00:00Z\n"
        );
        assert_eq!(
            render_policies(&[policy("p-1", "web")]),
            "ID   NAME  DESCRIPTION\np-1  web\n"
        );
    }
}
