//! Integration tests of the agent, in process: one binary, a shared harness.

mod acl;
mod api;
mod cluster;
mod common;
mod consul;
mod dns;
mod health;
mod limits;
mod matrix;
mod members;
mod shutdown;
mod storage;
mod tls;
mod watch;
