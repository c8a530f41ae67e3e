use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::balance::{HasTags, RoundRobin};
use crate::instance::Lifecycle;

fn instance(id: &str, tags: &[&str]) -> Instance {
    Instance {
        id: id.into(),
        service: "users".into(),
        address: "127.0.0.1".into(),
        port: 1,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: BTreeMap::new(),
        weight: 100,
        state: Default::default(),
        maintenance: None,
    }
}

fn list(ids: &[&str]) -> Endpoints {
    Endpoints::new(1, ids.iter().map(|id| instance(id, &[])).collect())
}

fn selector() -> Selector {
    Selector::builder()
        .balancer(RoundRobin::new())
        .breaker(BreakerConfig {
            consecutive_failures: 1,
            cool_down: Duration::from_secs(60),
            ..BreakerConfig::default()
        })
        .outlier_detection(OutlierConfig {
            consecutive_failures: 1,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        })
        .build()
}

/// Fails the next attempt that lands on `id` (round robin: at most `n` tries).
fn fail(selector: &Selector, endpoints: &Endpoints, id: &str) {
    for _ in 0..endpoints.len() {
        let selected = selector
            .select(endpoints, &PickContext::new(), &[])
            .unwrap();
        if selected.instance().id == id {
            selected.finish(Outcome::Failure);
            return;
        }
        selected.finish(Outcome::Success);
    }
    panic!("{id} was never picked");
}

#[tokio::test]
async fn an_unchanged_version_is_not_read_again() {
    let selector = selector();
    let endpoints = list(&["a", "b", "c"]);
    for _ in 0..50 {
        selector
            .select(&endpoints, &PickContext::new(), &[])
            .unwrap()
            .finish(Outcome::Success);
    }
    assert_eq!(selector.rebuilds(), 1, "one list, one table");
    // The same contents published again are a new list: one more rebuild, then none.
    let again = list(&["a", "b", "c"]);
    for _ in 0..10 {
        selector
            .select(&again, &PickContext::new(), &[])
            .unwrap()
            .finish(Outcome::Success);
    }
    assert_eq!(selector.rebuilds(), 2);
}

#[tokio::test]
async fn a_new_list_of_the_same_length_is_noticed() {
    let selector = selector();
    let before = list(&["a", "b"]);
    selector.endpoint_states(&before);
    assert!(selector.endpoint("b").is_some());
    // b is replaced by c: same length, another list.
    let after = list(&["a", "c"]);
    let states = selector.endpoint_states(&after);
    let ids: Vec<&str> = states.iter().map(|s| s.id()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert!(selector.endpoint("b").is_none());
    assert!(selector.endpoint("c").is_some());
    assert_eq!(selector.breakers().unwrap().len(), 2);
}

#[tokio::test]
async fn select_returns_the_position_of_the_chosen_instance() {
    let selector = selector();
    let endpoints = list(&["a", "b", "c", "d"]);
    let mut seen = Vec::new();
    for _ in 0..8 {
        let selected = selector
            .select(&endpoints, &PickContext::new(), &[])
            .unwrap();
        assert_eq!(endpoints[selected.position()].id, selected.instance().id);
        assert_eq!(selected.state().id(), selected.instance().id);
        seen.push(selected.position());
        selected.finish(Outcome::Success);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 0, 1, 1, 2, 2, 3, 3]);

    // Skipping tried instances and filtering (the allocating path) keep positions right.
    let tagged = Endpoints::new(
        2,
        vec![
            instance("a", &[]),
            instance("b", &["v2"]),
            instance("c", &[]),
            instance("d", &["v2"]),
        ],
    );
    let filtered = Selector::builder()
        .balancer(RoundRobin::new())
        .filter(HasTags::new(["v2"]))
        .build();
    for _ in 0..4 {
        let selected = filtered
            .select(&tagged, &PickContext::new(), &["b"])
            .unwrap();
        assert_eq!(
            (selected.position(), selected.instance().id.as_str()),
            (3, "d")
        );
        selected.finish(Outcome::Success);
    }
}

#[tokio::test]
async fn endpoint_state_survives_an_update_that_keeps_the_instance_and_goes_when_it_leaves() {
    let selector = selector();
    let first = list(&["a", "b", "c"]);
    fail(&selector, &first, "a");
    assert_eq!(selector.breaker_state("a"), BreakerState::Open);
    assert!(selector.is_ejected("a"));
    assert!(!selector.breakers().unwrap().all_closed());
    let held = selector.select(&first, &PickContext::new(), &[]).unwrap();
    let busy = held.instance().id.clone();
    assert_ne!(busy, "a");

    // A new list that keeps every instance (and adds one): the state carries over.
    let second = list(&["a", "b", "c", "d"]);
    let states = selector.endpoint_states(&second);
    assert_eq!(states[0].breaker_state(), BreakerState::Open);
    assert!(selector.is_ejected("a"));
    let position = second.iter().position(|i| i.id == busy).unwrap();
    assert_eq!(
        states[position].stats().in_flight(),
        1,
        "in-flight count kept"
    );
    held.finish(Outcome::Success);
    assert_eq!(states[position].stats().in_flight(), 0);
    drop(states);

    // a leaves: its state goes, and with it its open breaker and its ejection.
    let third = list(&["b", "c", "d"]);
    for _ in 0..6 {
        let selected = selector.select(&third, &PickContext::new(), &[]).unwrap();
        assert_ne!(selected.instance().id, "a");
        selected.finish(Outcome::Success);
    }
    assert!(selector.endpoint("a").is_none());
    assert_eq!(selector.breakers().unwrap().len(), 3);
    assert!(selector.breakers().unwrap().all_closed());
    assert!(selector.outliers().unwrap().none_ejected());

    // If it comes back, it starts afresh.
    let fourth = list(&["a", "b", "c", "d"]);
    selector.endpoint_states(&fourth);
    assert_eq!(selector.breaker_state("a"), BreakerState::Closed);
    assert!(!selector.is_ejected("a"));
}

#[test]
fn instances_not_serving_are_never_chosen_even_when_listed() {
    let selector = selector();
    let mut instances: Vec<Instance> = ["a", "b", "c"].iter().map(|id| instance(id, &[])).collect();
    instances[0].state = Lifecycle::Stopping;
    instances[2].maintenance = Some("disk swap".into());
    let endpoints = Endpoints::new(1, instances);
    for _ in 0..20 {
        let selected = selector
            .select(&endpoints, &PickContext::new(), &[])
            .unwrap();
        assert_eq!(selected.instance().id, "b");
        selected.finish(Outcome::Success);
    }
    // Even when b has been tried, a draining instance is not the fallback.
    let selected = selector
        .select(&endpoints, &PickContext::new(), &["b"])
        .unwrap();
    assert_eq!(selected.instance().id, "b");
    selected.finish(Outcome::Success);
    let mut starting = instance("a", &[]);
    starting.state = Lifecycle::Starting;
    let none = Endpoints::new(2, vec![starting]);
    assert!(matches!(
        selector.select(&none, &PickContext::new(), &[]),
        Err(SelectError::NoInstances)
    ));
}
