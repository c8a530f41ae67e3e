//! Integration tests of the gateway: an in-process agent (dev mode), test backends and the
//! gateway, all on 127.0.0.1:0, in one binary.

mod common;

mod admin;
mod auto_routes;
mod compression;
mod discovery_dns;
mod errors;
mod failover;
mod guard;
mod headers;
mod lifecycle;
mod limits;
mod paths;
mod protocols;
mod registry;
mod registry_access;
mod routing;
mod streaming;
mod tls;
mod websocket;
mod workers;
