//! The audit log: one JSON line per accepted write and per write refused with 403, written by
//! the node that received the request to `[audit] path` (appended, one line per write) and to
//! the tracing target `signpost::audit`.
//!
//! A line holds the time (RFC 3339), the node's name, the caller's accessor id (never a
//! secret; `null` with ACLs off or an unknown token), the client's address, the method, the
//! path without its query string (a `?token=` is never logged) and the status.
//!
//! Audited: every request that is not a `GET`/`HEAD`/`OPTIONS`, outside `/raft/*`, answered
//! 2xx or 403. Heartbeats and TTL updates (`…/heartbeat`, `/api/v1/heartbeats`,
//! `/v1/agent/check/{pass,warn,fail,update}/…`) are not: they are too frequent to log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use super::AppState;
use crate::service::Caller;

/// Where audit lines go besides the tracing target: the `[audit] path` file, if configured.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<Mutex<std::fs::File>>,
}

impl AuditLog {
    /// Opens (creating, appending to) the audit file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            file: Some(Mutex::new(file)),
        })
    }

    /// Writes one line to the file (if any) and the tracing target.
    fn record(&self, line: &Line<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        tracing::info!(target: "signpost::audit", "{text}");
        if let Some(file) = &self.file {
            text.push('\n');
            let mut file = file.lock().expect("audit file");
            if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
                tracing::error!("cannot write the audit log: {e}");
            }
        }
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: String,
    node: &'a str,
    accessor_id: Option<&'a str>,
    client: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
}

/// Whether a request is a write the audit log records (before its status is known).
pub fn audited(method: &Method, path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let heartbeat = path.ends_with("/heartbeat")
        || path == "/api/v1/heartbeats"
        || ["pass", "warn", "fail", "update"]
            .iter()
            .any(|kind| path.starts_with(&format!("/v1/agent/check/{kind}/")));
    !heartbeat && !path.starts_with("/raft/")
}

/// The audit middleware: records audited writes answered 2xx or 403.
pub async fn audit(State(agent): State<AppState>, req: Request, next: Next) -> Response {
    if !audited(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    let log = req.extensions().get::<Arc<AuditLog>>().cloned();
    let response = next.run(req).await;
    let status = response.status();
    if status.is_success() || status == axum::http::StatusCode::FORBIDDEN {
        let node = agent.config().node_name();
        let caller = response.extensions().get::<Caller>();
        let line = Line {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            node: &node,
            accessor_id: caller.and_then(Caller::accessor_id),
            client,
            method: method.as_str(),
            path: &path,
            status: status.as_u16(),
        };
        match log {
            Some(log) => log.record(&line),
            None => AuditLog::default().record(&line),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_audited_but_reads_heartbeats_and_raft_are_not() {
        assert!(audited(&Method::PUT, "/v1/agent/service/register"));
        assert!(audited(&Method::POST, "/api/v1/services/api/instances"));
        assert!(audited(&Method::DELETE, "/api/v1/kv/a"));
        assert!(audited(&Method::PUT, "/v1/acl/token"));
        assert!(!audited(&Method::GET, "/v1/kv/a"));
        assert!(!audited(
            &Method::PUT,
            "/api/v1/services/api/instances/i1/heartbeat"
        ));
        assert!(!audited(&Method::PUT, "/api/v1/heartbeats"));
        assert!(!audited(&Method::PUT, "/v1/agent/check/pass/service:x"));
        assert!(!audited(&Method::POST, "/raft/append"));
    }
}
