//! What the load looks like on the wire: names, ids and registration bodies.
//!
//! Everything is derived from an instance's sequence number `i`, so a run is reproducible and two
//! runs with different prefixes never collide.

use std::collections::BTreeMap;
use std::time::Duration;

use signpost_api::{Check, Registration};

/// Name of the `n`th service of a run: `{prefix}-{n}` (a DNS label, as the agent requires).
pub fn service_name(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n}")
}

/// Id of the `i`th instance of a run: unique across all of the run's services.
pub fn instance_id(prefix: &str, i: u64) -> String {
    format!("{prefix}-{i:07}")
}

/// A distinct address in 10.0.0.0/8 for instance `i` (registry data only; never dialled).
pub fn address(i: u64) -> String {
    let [_, _, _, _, _, a, b, c] = i.to_be_bytes();
    format!("10.{a}.{b}.{c}")
}

/// The port instance `i` claims to listen on.
pub fn port(i: u64) -> u16 {
    // Always in 1024..=50_023, so the conversion cannot fail.
    u16::try_from(1024 + i % 49_000).unwrap_or(1024)
}

/// The JSON body registering instance `i` of a run: about 300 bytes with a TTL check.
///
/// With `ttl = None` the instance has no check and is passing from the start.
pub fn registration(prefix: &str, i: u64, ttl: Option<Duration>) -> String {
    const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
    let zone = ZONES[(i % 3) as usize];
    let version = format!("1.{}.{}", i % 7, i % 13);
    let body = Registration {
        id: Some(instance_id(prefix, i)),
        address: address(i),
        port: port(i),
        weight: Some(100),
        tags: vec![
            "signpost-bench".to_string(),
            zone.to_string(),
            format!("v{version}"),
        ],
        metadata: BTreeMap::from([
            ("version".to_string(), version),
            ("zone".to_string(), zone.to_string()),
            (
                "owner".to_string(),
                "team-platform-discovery@example.org".to_string(),
            ),
            ("commit".to_string(), commit(i)),
        ]),
        check: ttl.map(|ttl| Check {
            ttl: Some(format!("{}ms", ttl.as_millis())),
            ..Check::default()
        }),
        status: None,
        state: None,
    };
    // Strings and integers only: serialising cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A made-up 40-hex-digit commit id, different for every instance.
fn commit(i: u64) -> String {
    let mut x = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(40);
    while out.len() < 40 {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        out.push_str(&format!("{:016x}", x));
    }
    out.truncate(40);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_about_300_bytes_and_distinct() {
        let a = registration("reg", 1, Some(Duration::from_secs(30)));
        let b = registration("reg", 2, Some(Duration::from_secs(30)));
        assert!((250..=350).contains(&a.len()), "{} bytes: {a}", a.len());
        assert_ne!(a, b);
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["tags"].as_array().unwrap().len(), 3);
        assert_eq!(v["metadata"].as_object().unwrap().len(), 4);
        assert_eq!(v["check"]["ttl"], "30000ms");
    }

    #[test]
    fn no_ttl_means_no_check() {
        let v: serde_json::Value = serde_json::from_str(&registration("disc-10", 3, None)).unwrap();
        assert!(v.get("check").is_none());
    }

    #[test]
    fn addresses_are_distinct_within_a_run() {
        assert_eq!(address(0), "10.0.0.0");
        assert_eq!(address(65_793), "10.1.1.1");
        assert_ne!(address(100_000), address(100_001));
    }
}
