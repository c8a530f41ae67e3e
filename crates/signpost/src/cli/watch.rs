//! `signpost watch SERVICE`: prints each change to a service as it happens, following the
//! SDK's watch stream and reconnecting with backoff.

use std::time::Duration;

use futures::StreamExt as _;
use serde::Serialize;
use signpost_api::watch::WatchEvent;
use signpost_client::backoff::{Backoff, Jitter, Reconnect};
use signpost_client::registry::signpost::StatusFilter;
use signpost_client::registry::RegistryError;

use super::agent::Agent;
use super::render::{warn, write_stdout};

/// Reconnection delays of `watch`: 200 ms doubling to 5 s, reset by every event shown.
const WATCH_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
    jitter: Jitter::None,
};

/// Follows a service's event stream, reconnecting with backoff, until an unrecoverable error.
///
/// Failing to connect the first time, and any 4xx answer, are errors; once a stream has
/// been established, dropped connections, 5xx answers and unreadable events are retried.
pub(super) async fn watch(
    agent: &Agent,
    service: &str,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let filter = if all {
        StatusFilter::Any
    } else {
        StatusFilter::Passing
    };
    let mut backoff = Reconnect::new(WATCH_BACKOFF);
    let mut connected_once = false;
    loop {
        let mut events = agent.registry.watch_events(service, filter);
        let reason = loop {
            match events.next().await {
                Some(Ok(event)) => {
                    connected_once = true;
                    backoff.reset();
                    write_stdout(&format!("{}\n", render_event(&event, json)?))?;
                }
                Some(Err(e)) if connected_once && retryable(&e) => break agent.describe(&e),
                Some(Err(e)) => return Err(agent.error(e)),
                None => break format!("the agent at {} closed the stream", agent.display),
            }
        };
        let delay = backoff.next_delay();
        warn(&format!(
            "watch: {reason}; reconnecting in {}",
            humantime::format_duration(delay)
        ));
        tokio::time::sleep(delay).await;
    }
}

/// Whether a broken watch is worth reconnecting: an unreachable or failing agent, an
/// unreadable event (the next connection starts with a fresh `reset`), or a 408 or 429.
fn retryable(err: &RegistryError) -> bool {
    match err {
        RegistryError::Unavailable { .. } | RegistryError::Malformed { .. } => true,
        RegistryError::Rejected {
            status: Some(status),
            ..
        } => {
            *status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || *status == reqwest::StatusCode::REQUEST_TIMEOUT
        }
        _ => false,
    }
}

/// Formats one watch event as an output line (without the newline): a short line, or with
/// `json` the event's data with its name as `event`.
fn render_event(event: &WatchEvent, json: bool) -> anyhow::Result<String> {
    let index = event.index();
    let name = event.name();
    if json {
        #[derive(Serialize)]
        struct Line<'a> {
            event: &'a str,
            #[serde(flatten)]
            data: serde_json::Value,
        }
        let data = match event {
            WatchEvent::Reset(list) => serde_json::to_value(list)?,
            WatchEvent::Add(c) | WatchEvent::Update(c) | WatchEvent::Remove(c) => {
                serde_json::to_value(c)?
            }
        };
        return Ok(serde_json::to_string(&Line { event: name, data })?);
    }
    Ok(match event {
        WatchEvent::Reset(list) => {
            let n = list.instances.len();
            let plural = if n == 1 { "" } else { "s" };
            format!("[index {index}] reset: {n} instance{plural}")
        }
        WatchEvent::Add(c) | WatchEvent::Update(c) | WatchEvent::Remove(c) => {
            let i = &c.instance;
            format!(
                "[index {index}] {name} {} {} {}",
                i.id,
                i.authority(),
                i.status
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::INSTANCE;
    use signpost_api::sse;

    /// The event as the agent's stream carries it, decoded as the SDK decodes it.
    fn ev(event: &str, data: &str) -> anyhow::Result<WatchEvent> {
        let event = sse::Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: None,
        };
        Ok(WatchEvent::from_sse(&event)?.expect("a watch event"))
    }

    #[test]
    fn watch_events_render_as_lines() {
        let reset = format!(r#"{{"index":12,"instances":[{INSTANCE},{INSTANCE},{INSTANCE}]}}"#);
        assert_eq!(
            render_event(&ev("reset", &reset).unwrap(), false).unwrap(),
            "[index 12] reset: 3 instances"
        );
        let add = format!(r#"{{"index":14,"instance":{INSTANCE}}}"#);
        assert_eq!(
            render_event(&ev("add", &add).unwrap(), false).unwrap(),
            "[index 14] add users-10.0.0.1-8080 10.0.0.1:8080 passing"
        );
        let v6 = INSTANCE.replace("10.0.0.1\"", "fd00::1\"");
        let remove = format!(r#"{{"index":15,"instance":{v6}}}"#);
        assert_eq!(
            render_event(&ev("remove", &remove).unwrap(), false).unwrap(),
            "[index 15] remove users-10.0.0.1-8080 [fd00::1]:8080 passing"
        );
        assert!(ev("add", "not json").is_err());
        assert!(ev("add", r#"{"index":1}"#).is_err());
    }

    #[test]
    fn watch_events_render_as_json_lines() {
        let add = format!(r#"{{"index":14,"instance":{INSTANCE}}}"#);
        let line = render_event(&ev("add", &add).unwrap(), true).unwrap();
        assert!(line.starts_with(r#"{"event":"add","#), "{line}");
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["index"], 14);
        assert_eq!(parsed["instance"]["id"], "users-10.0.0.1-8080");

        let reset = ev("reset", r#"{"index":3,"instances":[]}"#).unwrap();
        let line = render_event(&reset, true).unwrap();
        assert_eq!(line, r#"{"event":"reset","index":3,"instances":[]}"#);
    }

    #[test]
    fn watch_backoff_doubles_to_the_cap_and_resets() {
        let mut b = Reconnect::new(WATCH_BACKOFF);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn only_outages_and_bad_events_are_retried() {
        use signpost_api::ErrorBody;
        let rejected = |status| RegistryError::Rejected {
            what: "watch".into(),
            status: Some(status),
            body: ErrorBody {
                error: "no".into(),
                field: None,
            },
        };
        assert!(!retryable(&rejected(reqwest::StatusCode::BAD_REQUEST)));
        assert!(retryable(&rejected(reqwest::StatusCode::TOO_MANY_REQUESTS)));
        assert!(retryable(&RegistryError::Unavailable {
            agent: "a".into(),
            cause: signpost_client::registry::Cause::Closed,
        }));
    }
}
