//! The rest of the native API as [`SignpostRegistry`] methods: the services summary, listings
//! with a status filter, single instances, registration with its answer, service definitions,
//! KV, and cluster membership. Bodies are [`signpost_api`] types; failures are [`RegistryError`]s.

use std::time::Duration;

use signpost_api::{
    DefinitionSpec, InstanceList, JoinRequest, KvEntry, Left, Members, Registration, RemoveRequest,
    ServiceDefinition, ServiceSummary,
};

use super::{check, index_of, millis, Failover, SignpostRegistry, StatusFilter};
use crate::registry::agents::encode;
use crate::registry::RegistryError;

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The instance as the agent stored it (with its id, status and indexes).
    pub instance: signpost_api::Instance,
    /// Whether it is new (`201 Created`) rather than a replacement (`200 OK`).
    pub created: bool,
}

/// Conditions and flags of a KV write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvWrite {
    /// Only write if the key's modify index is this (0: only if absent). A mismatch is
    /// [`RegistryError::Rejected`] with status 409 and field `cas`.
    pub cas: Option<u64>,
    /// Opaque flags stored with the value.
    pub flags: Option<u64>,
}

/// `/api/v1/kv/{key}`, each segment of the key percent-encoded (its `/`s kept).
fn kv_path(key: &str) -> String {
    let segments: Vec<String> = key.split('/').map(encode).collect();
    format!("/api/v1/kv/{}", segments.join("/"))
}

/// `path` with `pairs` as its query string.
fn with_query(mut path: String, pairs: &[(&str, String)]) -> String {
    for (i, (key, value)) in pairs.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(key);
        path.push('=');
        path.push_str(&encode(value));
    }
    path
}

impl SignpostRegistry {
    /// `GET /api/v1/services`: every service with its instance counts by status.
    pub async fn services(&self) -> Result<Vec<ServiceSummary>, RegistryError> {
        Ok(self.inner.services(None).await?.1)
    }

    /// `GET /api/v1/services/{service}/instances` with a status filter: the instances and the
    /// index they reflect.
    pub async fn instances(
        &self,
        service: &str,
        filter: StatusFilter,
    ) -> Result<InstanceList, RegistryError> {
        self.inner.list(service, filter, None).await
    }

    /// `GET /api/v1/services/{service}/instances/{id}`.
    pub async fn instance(
        &self,
        service: &str,
        id: &str,
    ) -> Result<signpost_api::Instance, RegistryError> {
        let path = format!(
            "/api/v1/services/{}/instances/{}",
            encode(service),
            encode(id)
        );
        self.get(path, || format!("{service}/{id}")).await
    }

    /// `POST /api/v1/services/{service}/instances`: registers (or replaces) an instance.
    pub async fn register_instance(
        &self,
        service: &str,
        registration: &Registration,
    ) -> Result<Registered, RegistryError> {
        let path = format!("/api/v1/services/{}/instances", encode(service));
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.post(format!("{base}{path}")).json(registration)
            })
            .await?;
        let what = || {
            let id = registration.id.as_deref().unwrap_or("(new)");
            format!("register {service}/{id}")
        };
        let resp = check(resp, what).await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        let instance = self.inner.read(resp, what).await?;
        Ok(Registered { instance, created })
    }

    /// `DELETE /api/v1/services/{service}/instances/{id}`. An unknown instance is
    /// [`RegistryError::NotFound`] (the [`crate::registry::Registry::deregister`] of the trait
    /// takes that as success).
    pub async fn remove_instance(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let path = format!(
            "/api/v1/services/{}/instances/{}",
            encode(service),
            encode(id)
        );
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.delete(format!("{base}{path}"))
            })
            .await?;
        check(resp, || format!("{service}/{id}")).await?;
        Ok(())
    }

    /// `GET /api/v1/services/{service}/definition`. None stored is
    /// [`RegistryError::NotFound`].
    pub async fn definition(&self, service: &str) -> Result<ServiceDefinition, RegistryError> {
        let path = format!("/api/v1/services/{}/definition", encode(service));
        self.get(path, || format!("definition of {service}")).await
    }

    /// `PUT /api/v1/services/{service}/definition`: stores (or replaces) the definition and
    /// answers it as stored.
    pub async fn put_definition(
        &self,
        service: &str,
        spec: &DefinitionSpec,
    ) -> Result<ServiceDefinition, RegistryError> {
        let path = format!("/api/v1/services/{}/definition", encode(service));
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.put(format!("{base}{path}")).json(spec)
            })
            .await?;
        let what = || format!("definition of {service}");
        let resp = check(resp, what).await?;
        self.inner.read(resp, what).await
    }

    /// `DELETE /api/v1/services/{service}/definition`. None stored is
    /// [`RegistryError::NotFound`].
    pub async fn delete_definition(&self, service: &str) -> Result<(), RegistryError> {
        let path = format!("/api/v1/services/{}/definition", encode(service));
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.delete(format!("{base}{path}"))
            })
            .await?;
        check(resp, || format!("definition of {service}")).await?;
        Ok(())
    }

    /// `GET /api/v1/kv/{key}`. A missing key is [`RegistryError::NotFound`].
    pub async fn kv_get(&self, key: &str) -> Result<KvEntry, RegistryError> {
        self.get(kv_path(key), || format!("key {key}")).await
    }

    /// `GET /api/v1/kv/{prefix}?recurse`: every entry under `prefix` (none is an empty list).
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<KvEntry>, RegistryError> {
        let path = with_query(kv_path(prefix), &[("recurse", "true".into())]);
        match self.get(path, || format!("keys under {prefix:?}")).await {
            Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// `GET /api/v1/kv/{key}?index=N&wait=...`: waits until the key's index passes `index` (or
    /// `wait` ends) and answers the index then and the entry (`None`: the key is not set).
    pub async fn kv_wait(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, Option<KvEntry>), RegistryError> {
        let path = with_query(
            kv_path(key),
            &[("index", index.to_string()), ("wait", millis(wait))],
        );
        let timeout = wait + self.inner.options.request_timeout;
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.get(format!("{base}{path}")).timeout(timeout)
            })
            .await?;
        let new_index = index_of(&resp).unwrap_or(0);
        match check(resp, || format!("key {key}")).await {
            Ok(resp) => {
                let entry = self.inner.read(resp, || format!("key {key}")).await?;
                Ok((new_index, Some(entry)))
            }
            Err(RegistryError::NotFound { .. }) => Ok((new_index, None)),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v1/kv/{key}` with `value` as the body: the entry as written.
    pub async fn kv_put(
        &self,
        key: &str,
        value: Vec<u8>,
        write: KvWrite,
    ) -> Result<KvEntry, RegistryError> {
        let mut query = Vec::new();
        if let Some(cas) = write.cas {
            query.push(("cas", cas.to_string()));
        }
        if let Some(flags) = write.flags {
            query.push(("flags", flags.to_string()));
        }
        let path = with_query(kv_path(key), &query);
        let failover = if write.cas.is_some() {
            Failover::ConnectOnly
        } else {
            Failover::Any
        };
        let resp = self
            .inner
            .send(false, failover, |c, base| {
                c.put(format!("{base}{path}")).body(value.clone())
            })
            .await?;
        let resp = check(resp, || format!("write of key {key}")).await?;
        self.inner
            .read(resp, || format!("write of key {key}"))
            .await
    }

    /// `DELETE /api/v1/kv/{key}`: the key, or everything under it with `recurse`; with `cas`,
    /// only if its modify index is that.
    pub async fn kv_delete(
        &self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> Result<(), RegistryError> {
        let mut query = Vec::new();
        if recurse {
            query.push(("recurse", "true".to_string()));
        }
        if let Some(cas) = cas {
            query.push(("cas", cas.to_string()));
        }
        let path = with_query(kv_path(key), &query);
        let failover = if cas.is_some() {
            Failover::ConnectOnly
        } else {
            Failover::Any
        };
        let resp = self
            .inner
            .send(false, failover, |c, base| c.delete(format!("{base}{path}")))
            .await?;
        check(resp, || format!("delete of key {key}")).await?;
        Ok(())
    }

    /// `GET /api/v1/cluster/members`.
    pub async fn members(&self) -> Result<Members, RegistryError> {
        self.get("/api/v1/cluster/members".to_string(), || "members".into())
            .await
    }

    /// `POST /api/v1/cluster/join`: adds a node (any member accepts; the leader makes the
    /// change). Answers the members after.
    pub async fn join(&self, request: &JoinRequest) -> Result<Members, RegistryError> {
        self.membership("join", request, || {
            format!("join of node {}", request.node_id)
        })
        .await
    }

    /// `POST /api/v1/cluster/remove`: removes a node. Answers the members after.
    pub async fn remove_member(&self, node_id: u64) -> Result<Members, RegistryError> {
        self.membership("remove", &RemoveRequest { node_id }, || {
            format!("removal of node {node_id}")
        })
        .await
    }

    /// `POST /api/v1/cluster/leave`: takes the agent that receives it (the current one) out of
    /// its cluster.
    pub async fn leave(&self) -> Result<Left, RegistryError> {
        self.membership("leave", &serde_json::json!({}), || "leave".into())
            .await
    }

    /// A membership change: not repeated on another agent unless none could be reached.
    async fn membership<B, T>(
        &self,
        verb: &str,
        body: &B,
        what: impl Fn() -> String,
    ) -> Result<T, RegistryError>
    where
        B: serde::Serialize,
        T: serde::de::DeserializeOwned,
    {
        let path = format!("/api/v1/cluster/{verb}");
        let timeout = self.inner.options.membership_timeout;
        let resp = self
            .inner
            .send(false, Failover::ConnectOnly, |c, base| {
                c.post(format!("{base}{path}")).json(body).timeout(timeout)
            })
            .await?;
        let resp = check(resp, &what).await?;
        self.inner.read(resp, what).await
    }

    /// A plain `GET` of `path`, read as `T`.
    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: String,
        what: impl Fn() -> String,
    ) -> Result<T, RegistryError> {
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.get(format!("{base}{path}"))
            })
            .await?;
        let resp = check(resp, &what).await?;
        self.inner.read(resp, what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(kv_path("app/color"), "/api/v1/kv/app/color");
        assert_eq!(kv_path("a b/c?d"), "/api/v1/kv/a%20b/c%3Fd");
        assert_eq!(kv_path(""), "/api/v1/kv/");
        assert_eq!(
            with_query(kv_path("k"), &[("cas", "0".into()), ("wait", "5m".into())]),
            "/api/v1/kv/k?cas=0&wait=5m"
        );
    }
}
