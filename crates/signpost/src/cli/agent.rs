//! Connecting to the agent at `--addr` through the SDK, and turning the SDK's typed failures
//! into the messages the CLI prints.

use std::time::Duration;

use anyhow::{anyhow, bail};
use reqwest::{StatusCode, Url};
use signpost_api::ErrorBody;
use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
use signpost_client::registry::{Cause, ClientTls, RegistryError};

/// How long to wait for a TCP connection to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request limit for the one-shot commands (not for `watch`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The SDK's client for the one agent at `--addr`, and how to name it in messages.
pub(super) struct Agent {
    /// The SDK registry bound to the agent.
    pub(super) registry: SignpostRegistry,
    /// The address as the user wrote it (plus `http://`), for error messages.
    pub(super) display: String,
}

impl Agent {
    /// Checks `--addr` and builds the client, which sends `token` with every request and
    /// speaks TLS to an `https://` agent with `tls`.
    pub(super) fn connect(
        addr: &str,
        token: Option<String>,
        tls: ClientTls,
    ) -> anyhow::Result<Self> {
        let (base, display) = parse_base_url(addr)?;
        let options = SignpostOptions {
            token,
            tls,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            ..SignpostOptions::default()
        };
        let registry =
            SignpostRegistry::with_options([base.as_str().trim_end_matches('/')], options)
                .map_err(|e| match e {
                    RegistryError::Config(e) => anyhow!("{e}"),
                    e => anyhow!("cannot create the HTTP client: {e}"),
                })?;
        Ok(Agent { registry, display })
    }

    /// The message for a failed call.
    pub(super) fn error(&self, err: RegistryError) -> anyhow::Error {
        anyhow!(self.describe(&err))
    }

    /// The message for a failed call, as text.
    pub(super) fn describe(&self, err: &RegistryError) -> String {
        match err {
            RegistryError::Unavailable { cause, .. } => match cause {
                Cause::Transport { .. } => {
                    format!(
                        "cannot reach the agent at {}: {}",
                        self.display,
                        cause.reason()
                    )
                }
                Cause::Status { status, body } => answered(*status, body),
                Cause::Closed => format!("the agent at {} closed the stream", self.display),
            },
            // The agent refused the token (missing, unknown, expired, or without the right).
            RegistryError::Forbidden { body, .. } => answered(StatusCode::FORBIDDEN, body),
            // The Signpost agent says "not found" with a 404.
            RegistryError::NotFound { body, .. } => answered(StatusCode::NOT_FOUND, body),
            RegistryError::Rejected {
                status: Some(status),
                body,
                ..
            } => answered(*status, body),
            RegistryError::Malformed { source, .. } => {
                format!(
                    "unexpected response from the agent at {}: {source}",
                    self.display
                )
            }
            other => other.to_string(),
        }
    }
}

/// `the agent answered 400 Bad Request: message (field: f)`; the status alone for an empty
/// body.
pub(super) fn answered(status: StatusCode, body: &ErrorBody) -> String {
    if body.error.is_empty() {
        format!("the agent answered {status}")
    } else {
        format!("the agent answered {status}: {body}")
    }
}

/// Parses `--addr`: `http://host:port[/prefix]`, or a bare `host:port` (http is assumed).
/// Returns the base URL and the text to show in error messages.
pub(super) fn parse_base_url(addr: &str) -> anyhow::Result<(Url, String)> {
    let trimmed = addr.trim();
    if trimmed.is_empty() {
        bail!("the agent address (--addr / SIGNPOST_ADDR) is empty");
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| anyhow!("invalid agent address {addr:?}: {e} (expected http://HOST:PORT)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "invalid agent address {addr:?}: unsupported scheme {:?} (expected http://HOST:PORT)",
            url.scheme()
        );
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        bail!("invalid agent address {addr:?}: no host (expected http://HOST:PORT)");
    }
    url.set_query(None);
    url.set_fragment(None);
    let display = with_scheme.trim_end_matches('/').to_owned();
    Ok((url, display))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signpost_client::registry::TransportKind;

    #[test]
    fn agent_addresses() {
        let agent = Agent::connect("127.0.0.1:8500", None, ClientTls::default()).unwrap();
        assert_eq!(agent.display, "http://127.0.0.1:8500");
        assert_eq!(agent.registry.addrs(), ["http://127.0.0.1:8500"]);
        let agent =
            Agent::connect("http://agent:1/prefix/?x#y", None, ClientTls::default()).unwrap();
        assert_eq!(agent.registry.addrs(), ["http://agent:1/prefix"]);
        let (_, display) = parse_base_url("http://agent:1/prefix/").unwrap();
        assert_eq!(display, "http://agent:1/prefix");
        assert!(parse_base_url("").is_err());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("http://").is_err());
    }

    fn body(error: &str, field: Option<&str>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            field: field.map(Into::into),
        }
    }

    #[test]
    fn agent_error_messages() {
        let agent = Agent::connect("127.0.0.1:1", None, ClientTls::default()).unwrap();
        let rejected = RegistryError::Rejected {
            what: "register".into(),
            status: Some(StatusCode::BAD_REQUEST),
            body: body("port must be between 1 and 65535", Some("port")),
        };
        assert_eq!(
            agent.describe(&rejected),
            "the agent answered 400 Bad Request: port must be between 1 and 65535 (field: port)"
        );
        let missing = RegistryError::NotFound {
            what: "users/u1".into(),
            body: body("no such instance", None),
        };
        assert_eq!(
            agent.describe(&missing),
            "the agent answered 404 Not Found: no such instance"
        );
        let forbidden = RegistryError::Forbidden {
            what: "register".into(),
            body: body(
                "permission denied: token lacks service:write on \"api\"",
                None,
            ),
        };
        assert_eq!(
            agent.describe(&forbidden),
            "the agent answered 403 Forbidden: permission denied: token lacks service:write on \"api\""
        );
        let bad_gateway = RegistryError::Unavailable {
            agent: "http://127.0.0.1:1".into(),
            cause: Cause::Status {
                status: StatusCode::BAD_GATEWAY,
                body: body("upstream down", None),
            },
        };
        assert_eq!(
            agent.describe(&bad_gateway),
            "the agent answered 502 Bad Gateway: upstream down"
        );
        let unavailable = RegistryError::Unavailable {
            agent: "http://127.0.0.1:1".into(),
            cause: Cause::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: body("", None),
            },
        };
        assert_eq!(
            agent.describe(&unavailable),
            "the agent answered 503 Service Unavailable"
        );
        let timed_out = RegistryError::Unavailable {
            agent: "http://127.0.0.1:1".into(),
            cause: Cause::Transport {
                kind: TransportKind::TimedOut,
                detail: "operation timed out".into(),
            },
        };
        assert_eq!(
            agent.describe(&timed_out),
            "cannot reach the agent at http://127.0.0.1:1: timed out"
        );
    }
}
