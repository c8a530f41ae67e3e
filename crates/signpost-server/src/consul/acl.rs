//! `/v1/acl/*`: Consul's ACL endpoints, in Consul's JSON shapes, over
//! [`crate::service::acl`]'s operations (which decide who may call them).
//!
//! A token's `SecretID` appears only in the answer that created it (bootstrap, create): the
//! agent keeps only its hash, so reads leave it out.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use signpost_core::acl::{Policy, PolicyRef, Token};
use signpost_core::model::{Dur, Timestamp};

use super::with_meta;
use crate::http::{ApiError, AppState, JsonBody};
use crate::service::acl::{self as ops, Created, PolicyWrite, TokenWrite};
use crate::service::{self, Caller};

/// The keys of ACL bodies, in Consul's spelling.
const KEYS: [&str; 16] = [
    "ID",
    "Name",
    "Description",
    "Rules",
    "Datacenters",
    "AccessorID",
    "SecretID",
    "Policies",
    "ExpirationTTL",
    "ExpirationTime",
    "Local",
    "Roles",
    "ServiceIdentities",
    "NodeIdentities",
    "TemplatedPolicies",
    "Namespace",
];

fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Decodes an ACL body after rewriting its keys to Consul's spelling: Consul (Go's JSON)
/// matches keys without regard to case, and clients rely on it (py-consul sends `"name"`,
/// `"rules"`).
fn decode<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    fn canonical(value: &mut Value, depth: usize) {
        if let Value::Object(map) = value {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                let folded = fold(&key);
                let name = KEYS
                    .iter()
                    .find(|k| fold(k) == folded)
                    .map_or(key, |k| k.to_string());
                if depth == 0 && name == "Policies" {
                    if let Value::Array(items) = &mut v {
                        items.iter_mut().for_each(|i| canonical(i, 1));
                    }
                }
                map.insert(name, v);
            }
        }
    }
    canonical(&mut body, 0);
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest {
            message: format!("invalid JSON body: {}", e.inner()),
            field: (path != ".").then_some(path),
        }
    })
}

fn acl_index(agent: &AppState) -> u64 {
    service::acl::index(agent)
}

fn policy_json(p: &Policy, with_rules: bool) -> Value {
    let mut v = json!({
        "ID": p.id,
        "Name": p.name,
        "Description": p.description,
        "CreateIndex": p.create_index,
        "ModifyIndex": p.modify_index,
    });
    if with_rules {
        v["Rules"] = json!(p.rules);
    }
    v
}

fn token_json(t: &Token, secret: Option<&str>) -> Value {
    let policies: Vec<Value> = t
        .policies
        .iter()
        .map(|l| json!({"ID": l.id, "Name": l.name}))
        .collect();
    let mut v = json!({
        "AccessorID": t.accessor_id,
        "Description": t.description,
        "Policies": policies,
        "Local": false,
        "CreateTime": t.create_time,
        "CreateIndex": t.create_index,
        "ModifyIndex": t.modify_index,
    });
    if let Some(secret) = secret {
        v["SecretID"] = json!(secret);
    }
    if let Some(expiry) = t.expiration_time {
        v["ExpirationTime"] = json!(expiry);
    }
    v
}

fn created_json(c: &Created) -> Value {
    token_json(&c.token, Some(&c.secret))
}

/// `PUT /v1/acl/bootstrap`: the first management token, once; then 403.
pub async fn bootstrap(State(agent): State<AppState>) -> Result<Response, ApiError> {
    let created = ops::bootstrap(&agent).await?;
    Ok(with_meta(
        &agent,
        acl_index(&agent),
        Json(created_json(&created)),
    ))
}

/// A policy body: `{"Name", "Description", "Rules"}` (`ID` optional on update).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyBody {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    rules: Option<String>,
    #[serde(default)]
    datacenters: Option<Vec<String>>,
}

impl PolicyBody {
    fn into_write(self) -> Result<PolicyWrite, ApiError> {
        if self.datacenters.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(ApiError::bad_request(
                "Datacenters",
                "policies apply to every datacenter; Datacenters is not supported",
            ));
        }
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("Name", "Name is required"))?;
        Ok(PolicyWrite {
            name,
            description: self.description.unwrap_or_default(),
            rules: self.rules.unwrap_or_default(),
        })
    }
}

/// `PUT /v1/acl/policy`: creates a policy.
pub async fn create_policy(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let body: PolicyBody = decode(body)?;
    if body.id.as_deref().is_some_and(|id| !id.is_empty()) {
        return Err(ApiError::bad_request(
            "ID",
            "a new policy's ID is chosen by the agent; update a policy with PUT /v1/acl/policy/:id",
        ));
    }
    let policy = ops::set_policy(&agent, &caller, None, body.into_write()?).await?;
    Ok(with_meta(
        &agent,
        policy.modify_index,
        Json(policy_json(&policy, true)),
    ))
}

/// `PUT /v1/acl/policy/:id`: replaces a policy.
pub async fn update_policy(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let body: PolicyBody = decode(body)?;
    if body.id.as_deref().is_some_and(|b| !b.is_empty() && b != id) {
        return Err(ApiError::bad_request(
            "ID",
            "the body's ID does not match the path's",
        ));
    }
    let policy = ops::set_policy(&agent, &caller, Some(id), body.into_write()?).await?;
    Ok(with_meta(
        &agent,
        policy.modify_index,
        Json(policy_json(&policy, true)),
    ))
}

/// `GET /v1/acl/policy/:id`
pub async fn read_policy(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = ops::policy(&agent, &caller, &id)?;
    Ok(with_meta(
        &agent,
        policy.modify_index,
        Json(policy_json(&policy, true)),
    ))
}

/// `DELETE /v1/acl/policy/:id` → `true`
pub async fn delete_policy(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    ops::delete_policy(&agent, &caller, &id).await?;
    Ok(with_meta(&agent, acl_index(&agent), Json(true)))
}

/// `GET /v1/acl/policies`: every policy, without its rules (as Consul lists them).
pub async fn list_policies(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let (index, policies) = ops::policies(&agent, &caller)?;
    let list: Vec<Value> = policies.iter().map(|p| policy_json(p, false)).collect();
    Ok(with_meta(&agent, index, Json(list)))
}

/// A policy link in a token body: by `ID` or by `Name`.
#[derive(Debug, Deserialize)]
pub struct LinkBody {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: Option<String>,
}

/// A token body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokenBody {
    #[serde(rename = "AccessorID", default)]
    accessor_id: Option<String>,
    #[serde(rename = "SecretID", default)]
    secret_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    policies: Option<Vec<LinkBody>>,
    /// A duration: Go's text (`"24h"`) or, as Consul's Go client sends it, nanoseconds.
    #[serde(rename = "ExpirationTTL", default)]
    expiration_ttl: Option<Value>,
    #[serde(default)]
    expiration_time: Option<Timestamp>,
    #[serde(default)]
    local: Option<bool>,
    #[serde(default)]
    roles: Option<Vec<Value>>,
    #[serde(default)]
    service_identities: Option<Vec<Value>>,
    #[serde(default)]
    node_identities: Option<Vec<Value>>,
    #[serde(default)]
    templated_policies: Option<Vec<Value>>,
}

impl TokenBody {
    fn into_write(self) -> Result<TokenWrite, ApiError> {
        for (field, list) in [
            ("Roles", &self.roles),
            ("ServiceIdentities", &self.service_identities),
            ("NodeIdentities", &self.node_identities),
            ("TemplatedPolicies", &self.templated_policies),
        ] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(ApiError::bad_request(
                    field,
                    format!("{field} are not supported; link Policies"),
                ));
            }
        }
        if self.local == Some(true) {
            return Err(ApiError::bad_request(
                "Local",
                "local tokens are not supported: every token is replicated",
            ));
        }
        let mut policies = Vec::new();
        for (n, link) in self.policies.unwrap_or_default().into_iter().enumerate() {
            policies.push(match (link.id.filter(|s| !s.is_empty()), link.name) {
                (Some(id), _) => PolicyRef::Id(id),
                (None, Some(name)) if !name.is_empty() => PolicyRef::Name(name),
                _ => {
                    return Err(ApiError::bad_request(
                        &format!("Policies[{n}]"),
                        "a policy link needs an ID or a Name",
                    ))
                }
            });
        }
        let expiration_ttl_ms = match self.expiration_ttl {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(
                s.parse::<Dur>()
                    .map_err(|e| ApiError::bad_request("ExpirationTTL", e.to_string()))?
                    .as_millis(),
            ),
            Some(Value::Number(n)) => n.as_u64().map(|ns| ns / 1_000_000),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "ExpirationTTL",
                    "expected a duration such as \"24h\"",
                ))
            }
        };
        if expiration_ttl_ms == Some(0) {
            return Err(ApiError::bad_request(
                "ExpirationTTL",
                "ExpirationTTL must be more than 0",
            ));
        }
        if expiration_ttl_ms.is_some() && self.expiration_time.is_some() {
            return Err(ApiError::bad_request(
                "ExpirationTTL",
                "give ExpirationTTL or ExpirationTime, not both",
            ));
        }
        Ok(TokenWrite {
            accessor_id: self.accessor_id.filter(|s| !s.is_empty()),
            secret: self.secret_id.filter(|s| !s.is_empty()),
            description: self.description.unwrap_or_default(),
            policies,
            expiration_time: self.expiration_time,
            expiration_ttl_ms,
        })
    }
}

/// `PUT /v1/acl/token`: creates a token; the answer holds its `SecretID`, shown this once.
pub async fn create_token(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let body: TokenBody = decode(body)?;
    let created = ops::create_token(&agent, &caller, body.into_write()?).await?;
    Ok(with_meta(
        &agent,
        created.token.modify_index,
        Json(created_json(&created)),
    ))
}

/// `PUT /v1/acl/token/:accessor_id`: updates a token's description and policies.
pub async fn update_token(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(accessor_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let body: TokenBody = decode(body)?;
    if body
        .accessor_id
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != accessor_id)
    {
        return Err(ApiError::bad_request(
            "AccessorID",
            "the body's AccessorID does not match the path's",
        ));
    }
    let write = body.into_write()?;
    if write.expiration_ttl_ms.is_some() {
        return Err(ApiError::bad_request(
            "ExpirationTTL",
            "a token's expiration cannot be changed",
        ));
    }
    let token = ops::update_token(&agent, &caller, &accessor_id, write).await?;
    Ok(with_meta(
        &agent,
        token.modify_index,
        Json(token_json(&token, None)),
    ))
}

/// `GET /v1/acl/token/:accessor_id`
pub async fn read_token(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(accessor_id): Path<String>,
) -> Result<Response, ApiError> {
    let token = ops::token(&agent, &caller, &accessor_id)?;
    Ok(with_meta(
        &agent,
        token.modify_index,
        Json(token_json(&token, None)),
    ))
}

/// `GET /v1/acl/token/self`: the caller's own token.
pub async fn token_self(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let token = ops::token_self(&agent, &caller)?;
    Ok(with_meta(
        &agent,
        token.modify_index,
        Json(token_json(&token, None)),
    ))
}

/// `DELETE /v1/acl/token/:accessor_id` → `true`
pub async fn delete_token(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(accessor_id): Path<String>,
) -> Result<Response, ApiError> {
    ops::delete_token(&agent, &caller, &accessor_id).await?;
    Ok(with_meta(&agent, acl_index(&agent), Json(true)))
}

/// `GET /v1/acl/tokens`: every live token, without secrets.
pub async fn list_tokens(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let (index, tokens) = ops::tokens(&agent, &caller)?;
    let list: Vec<Value> = tokens.iter().map(|t| token_json(t, None)).collect();
    Ok(with_meta(&agent, index, Json(list)))
}
