//! Consul's ACL endpoints (`/v1/acl/*`) as [`SignpostRegistry`] methods, in Consul's JSON
//! shapes (PascalCase: `AccessorID`, `SecretID`, `Policies: [{ID, Name}]`, `ExpirationTTL`).
//! A Signpost agent with `[acl] enabled = true` serves them, and so does Consul itself.
//!
//! A token's `SecretID` is in the answer that created it (bootstrap, create) and nowhere else.
//! Refusals are [`RegistryError::Forbidden`] (a second bootstrap, a token without `acl:write`).

use serde::{Deserialize, Serialize};

use super::{check, Failover, SignpostRegistry};
use crate::registry::agents::encode;
use crate::registry::RegistryError;

/// An ACL policy as the agent answers it. Listings leave out `Rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclPolicy {
    /// The policy's id, chosen by the agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its unique name (tokens may link it by name).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its rules in Consul's rule language (HCL or JSON); absent from listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// The index that created it.
    #[serde(default)]
    pub create_index: u64,
    /// The index that last changed it.
    #[serde(default)]
    pub modify_index: u64,
}

/// A new policy: the body of `PUT /v1/acl/policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewPolicy {
    /// Its unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its rules (HCL or JSON).
    pub rules: String,
}

/// A link from a token to a policy, by id or by name (the agent fills in both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLink {
    /// The policy's id.
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The policy's name.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An ACL token as the agent answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclToken {
    /// The token's public id (what listings, deletion and the audit log use).
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// The secret presented as `X-Consul-Token`: only in the answer that created the token.
    #[serde(rename = "SecretID", default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The policies it carries.
    #[serde(default)]
    pub policies: Vec<PolicyLink>,
    /// When it stops working (RFC 3339), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// The index that created it.
    #[serde(default)]
    pub create_index: u64,
    /// The index that last changed it.
    #[serde(default)]
    pub modify_index: u64,
}

/// A new token: the body of `PUT /v1/acl/token`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewToken {
    /// What it is for.
    pub description: String,
    /// The policies it carries.
    pub policies: Vec<PolicyLink>,
    /// How long it lives (Go's duration text, `24h`); `None` for ever.
    #[serde(rename = "ExpirationTTL", skip_serializing_if = "Option::is_none")]
    pub expiration_ttl: Option<String>,
}

impl SignpostRegistry {
    /// `PUT /v1/acl/bootstrap`: the first management token, with its secret. Works once; after
    /// that the agent answers 403 ([`RegistryError::Forbidden`]).
    pub async fn acl_bootstrap(&self) -> Result<AclToken, RegistryError> {
        self.acl_put("/v1/acl/bootstrap", None::<&()>, || "ACL bootstrap".into())
            .await
    }

    /// `PUT /v1/acl/policy`: creates a policy and answers it as stored.
    pub async fn acl_policy_create(&self, policy: &NewPolicy) -> Result<AclPolicy, RegistryError> {
        self.acl_put("/v1/acl/policy", Some(policy), || {
            format!("create policy {}", policy.name)
        })
        .await
    }

    /// `GET /v1/acl/policies`: every policy (without its rules).
    pub async fn acl_policies(&self) -> Result<Vec<AclPolicy>, RegistryError> {
        self.get("/v1/acl/policies".into(), || "list policies".into())
            .await
    }

    /// `DELETE /v1/acl/policy/{id}`.
    pub async fn acl_policy_delete(&self, id: &str) -> Result<(), RegistryError> {
        self.acl_delete(format!("/v1/acl/policy/{}", encode(id)), || {
            format!("delete policy {id}")
        })
        .await
    }

    /// `PUT /v1/acl/token`: creates a token and answers it with its secret.
    pub async fn acl_token_create(&self, token: &NewToken) -> Result<AclToken, RegistryError> {
        self.acl_put("/v1/acl/token", Some(token), || "create token".into())
            .await
    }

    /// `GET /v1/acl/tokens`: every token (accessors, never secrets).
    pub async fn acl_tokens(&self) -> Result<Vec<AclToken>, RegistryError> {
        self.get("/v1/acl/tokens".into(), || "list tokens".into())
            .await
    }

    /// `GET /v1/acl/token/self`: the token this registry presents.
    pub async fn acl_token_self(&self) -> Result<AclToken, RegistryError> {
        self.get("/v1/acl/token/self".into(), || "read own token".into())
            .await
    }

    /// `DELETE /v1/acl/token/{accessor}`.
    pub async fn acl_token_delete(&self, accessor: &str) -> Result<(), RegistryError> {
        self.acl_delete(format!("/v1/acl/token/{}", encode(accessor)), || {
            format!("delete token {accessor}")
        })
        .await
    }

    /// A `PUT` that creates something: sent to another agent only when the connection could
    /// not be made (a repeated bootstrap or create would not mean the same).
    async fn acl_put<B, T>(
        &self,
        path: &str,
        body: Option<&B>,
        what: impl Fn() -> String,
    ) -> Result<T, RegistryError>
    where
        B: Serialize,
        T: serde::de::DeserializeOwned,
    {
        let resp = self
            .inner
            .send(false, Failover::ConnectOnly, |c, base| {
                let request = c.put(format!("{base}{path}"));
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        let resp = check(resp, &what).await?;
        self.inner.read(resp, what).await
    }

    /// A `DELETE` (safe to repeat); the agent's `true` is not read.
    async fn acl_delete(
        &self,
        path: String,
        what: impl Fn() -> String,
    ) -> Result<(), RegistryError> {
        let resp = self
            .inner
            .send(false, Failover::Any, |c, base| {
                c.delete(format!("{base}{path}"))
            })
            .await?;
        check(resp, what).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_consuls_shapes() {
        let token = NewToken {
            description: "ci".into(),
            policies: vec![PolicyLink {
                id: None,
                name: Some("web-write".into()),
            }],
            expiration_ttl: Some("24h".into()),
        };
        assert_eq!(
            serde_json::to_value(&token).unwrap(),
            serde_json::json!({"Description": "ci", "Policies": [{"Name": "web-write"}],
                               "ExpirationTTL": "24h"})
        );
        let policy = NewPolicy {
            name: "p".into(),
            description: String::new(),
            rules: "key_prefix \"\" { policy = \"read\" }".into(),
        };
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            serde_json::json!({"Name": "p", "Description": "",
                               "Rules": "key_prefix \"\" { policy = \"read\" }"})
        );
        let read: AclToken = serde_json::from_str(
            r#"{"AccessorID":"a-1","SecretID":"s-1","Description":"d","Local":false,
                "Policies":[{"ID":"p-1","Name":"web"}],"CreateTime":"2026-01-01T00:00:00Z",
                "ExpirationTime":"2026-01-02T00:00:00Z","CreateIndex":3,"ModifyIndex":4}"#,
        )
        .unwrap();
        assert_eq!(read.accessor_id, "a-1");
        assert_eq!(read.secret_id.as_deref(), Some("s-1"));
        assert_eq!(read.policies[0].name.as_deref(), Some("web"));
        assert_eq!(
            read.expiration_time.as_deref(),
            Some("2026-01-02T00:00:00Z")
        );
        // Reads leave the secret out.
        let read: AclToken = serde_json::from_str(r#"{"AccessorID":"a-1"}"#).unwrap();
        assert_eq!(read.secret_id, None);
        assert!(!serde_json::to_string(&read).unwrap().contains("SecretID"));
    }
}
