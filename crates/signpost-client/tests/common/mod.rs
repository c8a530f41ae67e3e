//! The SDK's own part of the integration tests' harness, on top of `signpost-testkit` (the
//! in-process agent and deadline polling every crate's tests share): a registry client for a
//! test agent, direct registration, and small builders.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the harness

use std::sync::Arc;

use serde_json::{json, Value};
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::Registry;
use signpost_server::Agent;
pub use signpost_testkit::{eventually, eventually_within, Storage, TestAgent};

/// What the SDK's tests ask of a test agent beyond the shared harness.
pub trait AgentExt {
    /// A registry client for this agent alone.
    fn registry(&self) -> Arc<dyn Registry>;
}

impl AgentExt for TestAgent {
    fn registry(&self) -> Arc<dyn Registry> {
        Arc::new(SignpostRegistry::new([self.base.clone()]).unwrap())
    }
}

/// Registers an instance straight through the agent's Raft log, without HTTP.
pub async fn register_directly(agent: &Agent, service: &str, body: Value) {
    let registration: signpost_core::validate::Registration = serde_json::from_value(body).unwrap();
    let new = signpost_core::validate::registration(service, registration).unwrap();
    agent
        .propose(signpost_core::Command::Register(new))
        .await
        .unwrap();
}

/// A registration body with a long TTL check (so it stays passing without heartbeats).
pub fn instance(id: &str, port: u16) -> Value {
    json!({ "id": id, "address": "10.0.0.1", "port": port, "check": { "ttl": "1h" } })
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sorted ids of a list of instances.
pub fn ids_of(list: &[signpost_client::Instance]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}
