//! [`EnvRegistry`]: instances from the environment variables Kubernetes (and Docker links)
//! inject into every container, for services that must not depend on a registry at all.
//!
//! For a service `user-service` the prefix is `USER_SERVICE` (upper-cased, `-` → `_`) and
//! the variables read are:
//!
//! - `USER_SERVICE_SERVICE_HOST` and `USER_SERVICE_SERVICE_PORT`: the service's (cluster)
//!   address and first port, one instance;
//! - when those are absent, every `USER_SERVICE_PORT_<N>_TCP=tcp://10.0.0.3:8080` (and the bare
//!   `USER_SERVICE_PORT=tcp://…`), one instance per distinct address and port.
//!
//! The environment is read once, when the registry is made: a container's environment never
//! changes, so [`Registry::watch`] yields one `Reset` and then stays pending. The environment
//! comes through [`EnvRegistry::from_vars`] (tests hand it a prepared map) or
//! [`EnvRegistry::from_process_env`]. The registry is read-only: registering, deregistering
//! and heartbeats are [`RegistryError::Unsupported`].

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};

use super::{RegistrationSpec, Registry, RegistryError, ServiceSet};
use crate::instance::{Instance, Update};

/// The index every answer carries: the environment never changes.
const ENV_INDEX: u64 = 1;

/// Instances read from injected environment variables (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct EnvRegistry {
    /// The variables, as read when the registry was made.
    vars: BTreeMap<String, String>,
}

impl EnvRegistry {
    /// A registry over the given variables (name, value): a prepared environment.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> EnvRegistry
    where
        K: Into<String>,
        V: Into<String>,
    {
        EnvRegistry {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A registry over this process's environment (variables that are not valid UTF-8 are
    /// skipped: none of the ones read here can be).
    pub fn from_process_env() -> EnvRegistry {
        EnvRegistry::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The instances the environment names for `service`, ordered by address and port.
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        let prefix = env_prefix(service);
        let host = self.vars.get(&format!("{prefix}_SERVICE_HOST"));
        let port = self
            .vars
            .get(&format!("{prefix}_SERVICE_PORT"))
            .and_then(|p| p.trim().parse::<u16>().ok());
        let mut found: BTreeSet<(String, u16)> = BTreeSet::new();
        if let (Some(host), Some(port)) = (host, port) {
            let host = host.trim();
            if !host.is_empty() && port != 0 {
                found.insert((host.to_string(), port));
            }
        } else {
            let bare = format!("{prefix}_PORT");
            let numbered = format!("{prefix}_PORT_");
            for (key, value) in self.vars.range(bare.clone()..) {
                if !key.starts_with(&bare) {
                    break;
                }
                let is_port_var = key == &bare
                    || key.strip_prefix(&numbered).is_some_and(|rest| {
                        rest.strip_suffix("_TCP")
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    });
                if let Some(addr) = is_port_var.then(|| parse_tcp_url(value)).flatten() {
                    found.insert(addr);
                }
            }
        }
        found
            .into_iter()
            .map(|(address, port)| Instance {
                id: signpost_api::instance::authority(&address, port),
                service: service.to_string(),
                address,
                port,
                tags: Vec::new(),
                metadata: BTreeMap::from([("source".to_string(), "environment".to_string())]),
                weight: 100,
                state: Default::default(),
                maintenance: None,
            })
            .collect()
    }

    /// The services the environment names (those with a `<NAME>_SERVICE_HOST`), in lower case
    /// with `_` → `-`.
    pub fn services(&self) -> BTreeSet<String> {
        self.vars
            .keys()
            .filter_map(|k| k.strip_suffix("_SERVICE_HOST"))
            .filter(|name| !name.is_empty())
            .map(|name| name.to_ascii_lowercase().replace('_', "-"))
            .collect()
    }

    fn unsupported<T: Send + 'static>(
        operation: &'static str,
    ) -> BoxFuture<'static, Result<T, RegistryError>> {
        Box::pin(async move {
            Err(RegistryError::Unsupported {
                registry: "the environment",
                operation,
            })
        })
    }
}

/// `user-service` → `USER_SERVICE`, as Kubernetes names its variables.
pub fn env_prefix(service: &str) -> String {
    service
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// `tcp://10.0.0.3:8080` (or `tcp://[fd00::1]:8080`) → address and port.
fn parse_tcp_url(value: &str) -> Option<(String, u16)> {
    let rest = value.trim().strip_prefix("tcp://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

impl Registry for EnvRegistry {
    fn register<'a>(
        &'a self,
        _spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("register")
    }

    fn deregister<'a>(
        &'a self,
        _service: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("deregister")
    }

    fn heartbeat<'a>(
        &'a self,
        _service: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("heartbeat")
    }

    fn list<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
        let instances = self.instances(service);
        Box::pin(async move { Ok((ENV_INDEX, instances)) })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        let reset = Update::Reset {
            index: ENV_INDEX,
            instances: self.instances(service),
        };
        stream::once(async move { Ok(reset) })
            .chain(stream::pending())
            .boxed()
    }

    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        let set = ServiceSet {
            index: ENV_INDEX,
            services: self.services(),
        };
        stream::once(async move { Ok(set) })
            .chain(stream::pending())
            .boxed()
    }
}

#[cfg(test)]
mod tests;
