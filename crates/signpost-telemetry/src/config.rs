//! The `[log]` and `[telemetry]` config sections (the agent's and the gateway's files share
//! them) and the OpenTelemetry environment variables that fill in what a file leaves out.

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    #[default]
    Text,
    /// One JSON object a line ([`crate::json`]), for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::LogFormat(other.to_string())),
        }
    }
}

/// `[log]`: how the process logs (the gateway's access log included).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (default) or `json`; `--log-format` overrides it.
    pub format: LogFormat,
}

/// `[telemetry]`: OpenTelemetry trace export, off unless an endpoint is given here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Base URL of an OTLP/HTTP collector (`http://collector:4318`); spans go to
    /// `<endpoint>/v1/traces`. Overrides `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces recorded, 0.0 to 1.0; a request that arrives with a sampled
    /// `traceparent` is recorded whatever this says (parent-based sampling).
    pub sampling_ratio: f64,
    /// The `service.name` spans carry. Overrides `OTEL_SERVICE_NAME`; the default is the
    /// process's role (`signpost-agent`, `signpost-gateway`).
    pub service_name: Option<String>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            service_name: None,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not `text` or `json`.
    #[error("log format must be \"text\" or \"json\", not {0:?}")]
    LogFormat(String),
    /// Outside 0.0..=1.0 (or not a number); the value as given, printed.
    #[error("telemetry.sampling_ratio must be between 0.0 and 1.0, not {0}")]
    SamplingRatio(String),
    /// Not an `http://` or `https://` URL (from the file or the environment, as `setting` says).
    #[error("{setting} must be an http:// or https:// URL, not {value:?}")]
    Endpoint {
        /// `telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
        setting: &'static str,
        /// What was given.
        value: String,
    },
}

/// Export settings after the environment filled in the gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The collector's base URL, without a trailing slash.
    pub endpoint: String,
    /// See [`TelemetrySection::sampling_ratio`].
    pub sampling_ratio: f64,
    /// See [`TelemetrySection::service_name`].
    pub service_name: String,
}

impl Resolved {
    /// Where spans are posted: the OTLP/HTTP traces path under the endpoint.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint)
    }
}

impl TelemetrySection {
    /// Checks the file's values (the environment's are checked by [`Self::resolve`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::SamplingRatio(self.sampling_ratio.to_string()));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_url("telemetry.otlp_endpoint", endpoint)?;
        }
        Ok(())
    }

    /// The export settings, or `None` when tracing is off (no endpoint in the file nor in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`). `env` reads a variable (tests pass a map, the binaries
    /// `std::env::var`); `role` is the default service name.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        role: &str,
    ) -> Result<Option<Resolved>, ConfigError> {
        self.validate()?;
        let endpoint = match (&self.otlp_endpoint, env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(file), _) => file.clone(),
            (None, Some(var)) if !var.trim().is_empty() => {
                check_url("OTEL_EXPORTER_OTLP_ENDPOINT", var.trim())?;
                var.trim().to_string()
            }
            _ => return Ok(None),
        };
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME").filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| role.to_string());
        Ok(Some(Resolved {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            sampling_ratio: self.sampling_ratio,
            service_name,
        }))
    }
}

fn check_url(setting: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.parse::<http::Uri>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Endpoint {
            setting,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        let section = TelemetrySection::default();
        assert_eq!(section.resolve(&env(&[]), "signpost-agent"), Ok(None));
    }

    #[test]
    fn the_environment_fills_in_and_the_file_wins() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "edge"),
        ];
        let from_env = TelemetrySection::default()
            .resolve(&env(&vars), "signpost-gateway")
            .unwrap()
            .unwrap();
        assert_eq!(from_env.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(from_env.service_name, "edge");
        let file = TelemetrySection {
            otlp_endpoint: Some("http://local:4318".into()),
            sampling_ratio: 0.25,
            service_name: Some("gw".into()),
        };
        let resolved = file
            .resolve(&env(&vars), "signpost-gateway")
            .unwrap()
            .unwrap();
        assert_eq!(resolved.endpoint, "http://local:4318");
        assert_eq!(resolved.service_name, "gw");
        assert_eq!(resolved.sampling_ratio, 0.25);
        let defaulted = TelemetrySection {
            otlp_endpoint: Some("http://local:4318".into()),
            ..TelemetrySection::default()
        };
        assert_eq!(
            defaulted
                .resolve(&env(&[]), "signpost-gateway")
                .unwrap()
                .unwrap()
                .service_name,
            "signpost-gateway"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let ratio = TelemetrySection {
            sampling_ratio: 1.5,
            ..TelemetrySection::default()
        };
        assert_eq!(
            ratio.validate(),
            Err(ConfigError::SamplingRatio("1.5".into()))
        );
        let url = TelemetrySection {
            otlp_endpoint: Some("collector:4318".into()),
            ..TelemetrySection::default()
        };
        assert!(url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("telemetry.otlp_endpoint"));
        let bad_env = TelemetrySection::default()
            .resolve(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "nope")]), "x")
            .unwrap_err();
        assert!(bad_env.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
        let section: LogSection = toml_like_json(r#"{"format":"json"}"#);
        assert_eq!(section.format, LogFormat::Json);
    }

    fn toml_like_json<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_str(s).unwrap()
    }
}
