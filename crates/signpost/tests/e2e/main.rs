//! End-to-end tests: the real `signpost` binary, started, stopped and killed as an operator
//! would, driven over its HTTP API and command line.

mod harness;

mod acl;
mod cli;
mod cli_acl;
mod cli_tls;
mod consul_clients;
mod dig;
mod durability;
mod gateway;
mod gateway_platform;
mod health;
mod lifecycle;
mod maintenance;
mod tls;
mod tracing;
mod ui;
