//! `/api/v1/agent/self` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;

use super::cache::FrameCache;
use super::{ApiError, AppState};
use crate::service::{self, Caller};

/// `GET /api/v1/agent/self`: who this agent is and how its Raft group stands.
pub async fn agent_self(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    service::authorize_agent_read(&agent, &caller)?;
    let members = service::members(&agent, &Caller::internal())?.members;
    let m = agent.raft().metrics().borrow().clone();
    let last_index = service::last_index(&agent);
    let instances = service::status_counts(&agent);
    Ok(Json(json!({
        "node_id": agent.node_id(),
        "node_name": agent.config().node_name(),
        "datacenter": agent.config().datacenter,
        "version": env!("CARGO_PKG_VERSION"),
        "http_addr": agent.advertise_addr().to_string(),
        "raft_addr": agent.node().raft_addr,
        "last_contact_ms": agent.last_contact_ms(),
        "started_at": humantime::format_rfc3339_millis(agent.started_at()).to_string(),
        "last_index": last_index,
        "instances": instances,
        "raft": {
            "role": format!("{:?}", m.state).to_lowercase(),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
            "members": members,
        },
        "eviction_guard": agent.health().guard(),
        "health": crate::vitals::report(&agent),
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(
    State(agent): State<AppState>,
    Extension(frames): Extension<Arc<FrameCache>>,
    Extension(consul): Extension<Arc<crate::consul::cache::RenderCache>>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    service::authorize_agent_read(&agent, &caller)?;
    let members = service::members(&agent, &Caller::internal())?.members;
    let m = agent.raft().metrics().borrow().clone();
    let counts = service::status_counts(&agent);
    let guard = agent.health().guard();
    let watchers = agent.watchers();
    metrics::with_local_recorder(agent.recorder(), || {
        crate::vitals::record(&agent);
        for (status, n) in [
            ("passing", counts.passing),
            ("warning", counts.warning),
            ("critical", counts.critical),
        ] {
            metrics::gauge!("signpost_instances", "status" => status).set(n as f64);
        }
        metrics::gauge!("signpost_watchers").set(watchers as f64);
        metrics::counter!("signpost_watch_frames_rendered_total").absolute(frames.renders());
        metrics::counter!("signpost_consul_renders_total").absolute(consul.renders());
        metrics::gauge!("signpost_health_active_checks").set(agent.health().active_checks() as f64);
        metrics::gauge!("signpost_eviction_guard_engaged").set(f64::from(u8::from(guard.engaged)));
        metrics::gauge!("signpost_eviction_guard_overdue_instances").set(guard.overdue as f64);
        metrics::gauge!("signpost_raft_term").set(m.current_term as f64);
        metrics::gauge!("signpost_raft_is_leader").set(f64::from(u8::from(
            m.state == openraft::ServerState::Leader,
        )));
        metrics::gauge!("signpost_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("signpost_raft_applied_index")
            .set(m.last_applied.map_or(0, |l| l.index) as f64);
        // Entries are applied as soon as they are committed: applied is the commit index this
        // node has acted on.
        metrics::gauge!("signpost_raft_commit_index")
            .set(m.last_applied.map_or(0, |l| l.index) as f64);
        metrics::gauge!("signpost_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
        for member in members {
            if let Some(lag) = member.lag {
                metrics::gauge!("signpost_raft_replication_lag_entries", "node" => member.id.to_string())
                    .set(lag as f64);
            }
        }
        if let Some(ms) = agent.last_contact_ms() {
            metrics::gauge!("signpost_raft_last_contact_seconds").set(ms as f64 / 1000.0);
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        agent.recorder().handle().render(),
    ))
}
