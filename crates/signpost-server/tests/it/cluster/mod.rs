//! Cluster behaviour in process: three or four agents wired by an in-memory network that can
//! delay, lose and cut messages (see `fixture`), so elections, forwarding, read-index reads and
//! membership changes are checked in well under a second each. The real-process fault tests
//! (`crates/signpost/tests/cluster`) stay beside these.

mod elections;
mod fixture;
mod heartbeat_batch;
mod membership;
mod requests;
