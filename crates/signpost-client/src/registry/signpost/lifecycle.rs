//! Maintenance and lifecycle state on the native API, as [`SignpostRegistry`] methods:
//! `PUT …/instances/{id}/maintenance?enable=…&reason=…` and `PUT …/instances/{id}/state`.

use signpost_api::Lifecycle;

use super::{check, Failover, SignpostRegistry};
use crate::registry::agents::encode;
use crate::registry::RegistryError;

/// The body of `PUT …/state`.
#[derive(serde::Serialize)]
struct StateBody {
    /// The state to announce.
    state: Lifecycle,
}

impl SignpostRegistry {
    /// Puts an instance into maintenance (`enable`, with an optional `reason`) or takes it
    /// out: it stays registered but leaves discovery meanwhile. Answers the instance after
    /// the change; an unknown instance is [`RegistryError::NotFound`].
    pub async fn set_maintenance(
        &self,
        service: &str,
        id: &str,
        enable: bool,
        reason: Option<&str>,
    ) -> Result<signpost_api::Instance, RegistryError> {
        let mut path = format!("{}/maintenance?enable={enable}", instance_path(service, id));
        if let Some(reason) = reason {
            path.push_str("&reason=");
            path.push_str(&encode(reason));
        }
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.put(format!("{base}{path}"))
            })
            .await?;
        let what = || format!("{service}/{id}");
        let resp = check(resp, what).await?;
        self.inner.read(resp, what).await
    }

    /// Announces an instance's lifecycle state (`starting`, `up`, `stopping`): only `up`
    /// instances are discovered. Answers the instance after the change.
    pub async fn set_state(
        &self,
        service: &str,
        id: &str,
        state: Lifecycle,
    ) -> Result<signpost_api::Instance, RegistryError> {
        let path = format!("{}/state", instance_path(service, id));
        let body = StateBody { state };
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.put(format!("{base}{path}")).json(&body)
            })
            .await?;
        let what = || format!("{service}/{id}");
        let resp = check(resp, what).await?;
        self.inner.read(resp, what).await
    }
}

/// `/api/v1/services/{service}/instances/{id}`, both percent-encoded.
fn instance_path(service: &str, id: &str) -> String {
    format!(
        "/api/v1/services/{}/instances/{}",
        encode(service),
        encode(id)
    )
}
