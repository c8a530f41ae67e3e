//! `services`, `instances` and `deregister`.

use signpost_api::{Instance, ServiceSummary};
use signpost_client::registry::signpost::StatusFilter;

use super::agent::Agent;
use super::render::{format_table, print_json_pretty, write_stdout};

/// `signpost services`: every service with its instance counts by status.
pub(super) async fn services(agent: &Agent, json: bool) -> anyhow::Result<()> {
    let services = agent
        .registry
        .services()
        .await
        .map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(&services);
    }
    write_stdout(&render_services(&services))
}

/// `signpost instances SERVICE [--all]`.
pub(super) async fn instances(
    agent: &Agent,
    service: &str,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let filter = if all {
        StatusFilter::Any
    } else {
        StatusFilter::Passing
    };
    let list = agent
        .registry
        .instances(service, filter)
        .await
        .map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(&list);
    }
    write_stdout(&render_instances(&list.instances))
}

/// `signpost deregister SERVICE ID`: an unknown instance is an error (404).
pub(super) async fn deregister(
    agent: &Agent,
    service: &str,
    id: &str,
    json: bool,
) -> anyhow::Result<()> {
    agent
        .registry
        .remove_instance(service, id)
        .await
        .map_err(|e| agent.error(e))?;
    if json {
        return print_json_pretty(
            &serde_json::json!({ "deregistered": { "service": service, "id": id } }),
        );
    }
    write_stdout(&format!("deregistered {service}/{id}\n"))
}

/// The services table (or `no services`).
pub(super) fn render_services(services: &[ServiceSummary]) -> String {
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.instances.passing.to_string(),
                s.instances.warning.to_string(),
                s.instances.critical.to_string(),
                s.index.to_string(),
            ]
        })
        .collect();
    format_table(&["NAME", "PASSING", "WARNING", "CRITICAL", "INDEX"], &rows)
}

/// The instances table.
pub(super) fn render_instances(instances: &[Instance]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.authority(),
                i.status.to_string(),
                i.weight.to_string(),
                if i.tags.is_empty() {
                    "-".to_owned()
                } else {
                    i.tags.join(",")
                },
            ]
        })
        .collect();
    format_table(&["ID", "ADDRESS", "STATUS", "WEIGHT", "TAGS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::INSTANCE;
    use signpost_api::InstanceList;

    #[test]
    fn services_table_and_empty_list() {
        assert_eq!(render_services(&[]), "no services\n");
        let services: Vec<ServiceSummary> = serde_json::from_str(
            r#"[{"name":"users","index":12,"instances":{"passing":2,"warning":0,"critical":1},"has_definition":false},
                {"name":"billing-api","index":7,"instances":{"passing":10,"warning":1,"critical":0}}]"#,
        )
        .unwrap();
        assert_eq!(
            render_services(&services),
            "NAME         PASSING  WARNING  CRITICAL  INDEX\n\
             users        2        0        1         12\n\
             billing-api  10       1        0         7\n"
        );
    }

    #[test]
    fn instances_table_and_empty_list() {
        assert_eq!(render_instances(&[]), "ID  ADDRESS  STATUS  WEIGHT  TAGS\n");
        let list: InstanceList = serde_json::from_str(&format!(
            r#"{{"index":3,"instances":[{INSTANCE},
               {{"id":"b","address":"::1","port":80,"tags":[],"weight":5,"status":"critical"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            render_instances(&list.instances),
            "ID                   ADDRESS        STATUS    WEIGHT  TAGS\n\
             users-10.0.0.1-8080  10.0.0.1:8080  passing   1       a\n\
             b                    [::1]:80       critical  5       -\n"
        );
    }
}
