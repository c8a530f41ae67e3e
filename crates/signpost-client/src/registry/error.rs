//! [`RegistryError`]: why a registry call failed, structured so callers match on the cause
//! (re-register on [`RegistryError::NotFound`], retry on [`RegistryError::Unavailable`], show
//! [`RegistryError::Rejected`]'s message, stop on [`RegistryError::Forbidden`]) and never on
//! text.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use http::StatusCode;
use signpost_api::ErrorBody;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No registry server gave an answer: each was unreachable, timed out or failing (5xx). The
    /// last one tried, and why it failed.
    #[error("registry unreachable: {agent}: {cause}")]
    Unavailable {
        /// The server tried last (a base URL, or `etcd`).
        agent: String,
        /// What went wrong with it.
        cause: Cause,
    },
    /// What was asked for is not there: a heartbeat or deregistration of an instance the
    /// registry does not know (register again), a missing KV key or definition.
    #[error("not found: {what}{}", body_suffix(.body))]
    NotFound {
        /// What was looked for (`users/u-1`, `key app/color`).
        what: String,
        /// The registry's explanation.
        body: ErrorBody,
    },
    /// The registry refused the request for lack of rights (403): the token is missing, unknown,
    /// expired, or its policies do not allow the call. Every agent would say the same, so it is
    /// never retried as an outage; the message is the agent's (`permission denied: token lacks
    /// service:write on "api"`, `ACL not found`).
    #[error("permission denied for {what}{}", body_suffix(.body))]
    Forbidden {
        /// The request refused (`register users/u-1`, `list services`).
        what: String,
        /// The registry's error message.
        body: ErrorBody,
    },
    /// The registry refused the request (a 4xx other than 403 and 404, or a condition such as a failed
    /// `cas`); another server would refuse it too.
    #[error("registry rejected {what}{}{}", status_suffix(.status), body_suffix(.body))]
    Rejected {
        /// The request refused (`register users/u-1`).
        what: String,
        /// The HTTP status, when the registry speaks HTTP.
        status: Option<StatusCode>,
        /// The registry's error message and the field it blames.
        body: ErrorBody,
    },
    /// The registry answered something this SDK cannot read (not JSON, a malformed event, a
    /// missing header).
    #[error("unexpected answer from the registry ({what}): {source}")]
    Malformed {
        /// What was being read (`listing of users`, `watch of users`).
        what: String,
        /// What was wrong with it.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The registry client is misconfigured (no server addresses, an unusable token, an HTTP
    /// client that cannot be built).
    #[error("invalid registry configuration: {0}")]
    Config(#[source] ConfigError),
    /// The registry cannot do this at all: a watch-only registry (the platform's DNS, the
    /// environment) asked to register, deregister or renew. Retrying never helps.
    #[error("{registry} registry does not support {operation}: it only reads what the platform publishes (register with Signpost, Consul or etcd instead)")]
    Unsupported {
        /// The registry (`dns`, `environment`).
        registry: &'static str,
        /// What was asked of it (`register`, `deregister`, `heartbeat`, `watch_services`).
        operation: &'static str,
    },
}

/// `": 400 Bad Request"`, or nothing without a status.
fn status_suffix(status: &Option<StatusCode>) -> String {
    status.map(|s| format!(": {s}")).unwrap_or_default()
}

/// `": message (field: f)"`, or nothing for an empty body.
fn body_suffix(body: &ErrorBody) -> String {
    if body.error.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// Why a registry server gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    /// The request got no answer: no connection, a timeout, a broken connection.
    #[error("{detail}")]
    Transport {
        /// What kind of failure, for callers and messages.
        kind: TransportKind,
        /// The transport's own description (the whole error chain).
        detail: String,
    },
    /// The server answered with an error status (5xx, 429) another server might not repeat.
    #[error("{status}{}", body_suffix(.body))]
    Status {
        /// The status.
        status: StatusCode,
        /// Its error body (`error` empty when it had none).
        body: ErrorBody,
    },
    /// The server ended a stream (a watch) it keeps open while it is healthy.
    #[error("the server closed the stream")]
    Closed,
}

/// The kinds of transport failure callers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Nothing listens there: the connection was refused.
    Refused,
    /// The connection was reset.
    Reset,
    /// Connecting, or waiting for the answer, took too long.
    TimedOut,
    /// Any other failure to connect (unreachable network, DNS, TLS).
    Connect,
    /// The connection broke mid-request or mid-body.
    Other,
}

impl TransportKind {
    /// A short reason for people: "connection refused", "timed out", ...; `None` for the kinds
    /// best described by the transport's own message.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            TransportKind::Refused => Some("connection refused"),
            TransportKind::Reset => Some("connection reset by peer"),
            TransportKind::TimedOut => Some("timed out"),
            TransportKind::Connect | TransportKind::Other => None,
        }
    }
}

impl Cause {
    /// The cause of a failed HTTP request.
    pub(crate) fn transport(err: &reqwest::Error) -> Self {
        Cause::Transport {
            kind: transport_kind(err),
            detail: error_chain(err),
        }
    }

    /// A short reason for people: the kind's reason when it has one, else the innermost
    /// message of the chain (for a status: `503 Service Unavailable: message`).
    pub fn reason(&self) -> String {
        match self {
            Cause::Transport { kind, detail } => match kind.reason() {
                Some(reason) => reason.to_string(),
                None => detail.rsplit(": ").next().unwrap_or(detail).to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// Classifies a reqwest error by the I/O error inside it.
fn transport_kind(err: &reqwest::Error) -> TransportKind {
    if err.is_timeout() {
        return TransportKind::TimedOut;
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io_err) = cause.downcast_ref::<io::Error>() {
            match io_err.kind() {
                io::ErrorKind::ConnectionRefused => return TransportKind::Refused,
                io::ErrorKind::ConnectionReset => return TransportKind::Reset,
                io::ErrorKind::TimedOut => return TransportKind::TimedOut,
                _ => {}
            }
        }
        source = cause.source();
    }
    if err.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

/// An error and its sources on one line (reqwest's top-level message alone is vague).
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    use fmt::Write as _;
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// What was wrong with an HTTP answer the SDK could not read, beyond its JSON (a
/// `serde_json::Error` is carried as itself): one of the sources of [`RegistryError::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// A header the answer must carry is missing or not a number (Consul's `X-Consul-Index`):
    /// whatever answered is likely not the registry it was taken for.
    #[error("no {header} header: not a {system} agent?")]
    MissingHeader {
        /// The header's name.
        header: &'static str,
        /// The registry's system ("Consul").
        system: &'static str,
    },
    /// A watch was answered with something other than an event stream.
    #[error("expected an event stream, got {content_type:?}")]
    NotAnEventStream {
        /// The `Content-Type` the agent sent (empty when none).
        content_type: String,
    },
}

/// Why a registry client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No server address was given.
    #[error("a {system} registry needs at least one agent address")]
    NoAgents {
        /// The registry's system ("Signpost", "Consul").
        system: &'static str,
    },
    /// The ACL token cannot be sent in a header.
    #[error("the {system} token contains characters a header cannot carry")]
    BadToken {
        /// The registry's system.
        system: &'static str,
    },
    /// The TLS files (CA, client certificate and key) cannot be used.
    #[error("the {system} registry's TLS settings: {source}")]
    Tls {
        /// The registry's system.
        system: &'static str,
        /// What is wrong with them.
        #[source]
        source: signpost_tls::TlsError,
    },
    /// The registry cannot do what the settings ask for.
    #[error("the {system} registry does not support {what}")]
    Unsupported {
        /// The registry's system.
        system: &'static str,
        /// What it cannot do.
        what: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A DNS registry's name template cannot name a service (no `{service}`, or not a DNS
    /// name once filled in).
    #[error("the DNS name template {template:?}: {reason}")]
    DnsTemplate {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A DNS registry's TTL floor is zero or above its ceiling.
    #[error("the DNS re-resolution bounds: the floor ({floor:?}) must be above 0 and at most the ceiling ({ceiling:?})")]
    DnsTtlBounds {
        /// The shortest wait between resolutions.
        floor: std::time::Duration,
        /// The longest wait between resolutions.
        ceiling: std::time::Duration,
    },
}

impl RegistryError {
    /// Whether the registry is (for now) out of reach, so the call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// Whether the registry refused the call for lack of rights (the token).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, RegistryError::Forbidden { .. })
    }

    /// Whether the thing asked for is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// An error body that carries only a message (registries that send no field).
    pub(crate) fn body(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
            field: None,
        }
    }

    /// A refusal made by this process before anything was sent (a bad argument).
    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        RegistryError::Rejected {
            what: what.into(),
            status: None,
            body: ErrorBody {
                error: message.into(),
                field: None,
            },
        }
    }

    /// An answer that could not be read, and the typed error that says why.
    pub(crate) fn malformed(
        what: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        RegistryError::Malformed {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// An error body from whatever an HTTP server answered: its JSON `{"error", "field"}` if it
/// sent one, else the start of its text.
pub(crate) fn error_body(bytes: &[u8]) -> ErrorBody {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return body;
    }
    let text = String::from_utf8_lossy(bytes);
    ErrorBody {
        error: text.trim().chars().take(200).collect(),
        field: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let e = RegistryError::Rejected {
            what: "register users/u1".into(),
            status: Some(StatusCode::BAD_REQUEST),
            body: error_body(br#"{"error":"port must be between 1 and 65535","field":"port"}"#),
        };
        assert_eq!(
            e.to_string(),
            "registry rejected register users/u1: 400 Bad Request: port must be between 1 and 65535 (field: port)"
        );
        assert_eq!(
            RegistryError::invalid("registration", "ttl must be above zero").to_string(),
            "registry rejected registration: ttl must be above zero"
        );
        let e = RegistryError::Unavailable {
            agent: "http://a:1".into(),
            cause: Cause::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: error_body(b"  no leader\n"),
            },
        };
        assert_eq!(
            e.to_string(),
            "registry unreachable: http://a:1: 503 Service Unavailable: no leader"
        );
        let cause = Cause::Transport {
            kind: TransportKind::Other,
            detail: "error sending request: connection closed before message completed".into(),
        };
        assert_eq!(cause.reason(), "connection closed before message completed");
        let refused = Cause::Transport {
            kind: TransportKind::Refused,
            detail: "tcp connect error: Connection refused (os error 111)".into(),
        };
        assert_eq!(refused.reason(), "connection refused");
    }

    #[tokio::test]
    async fn transport_failures_are_classified() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        signpost_tls::install_default_provider();
        let err = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        match Cause::transport(&err) {
            Cause::Transport { kind, detail } => {
                assert_eq!(kind, TransportKind::Refused, "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
