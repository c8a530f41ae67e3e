//! Integration tests of the agent, in process: one binary, a shared harness.

mod acl;
mod api;
mod cache_size;
mod cheap;
mod check_targets;
mod cluster;
mod common;
mod compression;
mod consul;
mod dns;
mod fuzz;
mod health;
mod health_tls;
mod lifecycle;
mod limits;
mod listener_limits;
mod matrix;
mod members;
mod robustness;
mod shutdown;
mod storage;
mod tls;
mod vitals;
mod watch;
