//! Access control in the service layer: who is calling ([`Caller`], resolved once per request
//! from its token by [`resolve`]), the one [`authorize`] every operation calls, and the ACL
//! operations themselves (bootstrap, policies, tokens) that the Consul face's `/v1/acl/*` calls.
//!
//! With ACLs off (`[acl] enabled = false`, the default) every caller is unrestricted and no
//! token is read. Secrets and accessor ids are made here (random UUIDs) and carried in the Raft
//! command; the replicated state keeps only each secret's SHA-256.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use signpost_core::acl::{
    hash_secret, Access, AclCommand, AclOutcome, AclRefusal, Authorizer, DefaultPolicy, Policy,
    PolicyInput, PolicyRef, Resource, Rules, Token, TokenInput,
};
use signpost_core::model::Timestamp;
use signpost_core::{Command, Response};

use super::{apply, read, Result, ServiceError};
use crate::agent::{now_ms, Agent};
use crate::config::AclSettings;

/// Who is making a request: a token's accessor and its rights, or the unrestricted caller (ACLs
/// off, or the agent's own internal work). Cloning shares it; one is made per request.
#[derive(Debug, Clone)]
pub struct Caller(Arc<CallerInner>);

#[derive(Debug)]
struct CallerInner {
    /// The token's accessor id; `None` for the unrestricted caller.
    accessor_id: Option<String>,
    /// The token's rights; `None` allows everything.
    authz: Option<Arc<Authorizer>>,
    /// Set when a listing left something out for lack of rights: the HTTP layer answers
    /// `X-Consul-Results-Filtered-By-ACLs: true`.
    filtered: AtomicBool,
}

impl Caller {
    fn new(accessor_id: Option<String>, authz: Option<Arc<Authorizer>>) -> Self {
        Caller(Arc::new(CallerInner {
            accessor_id,
            authz,
            filtered: AtomicBool::new(false),
        }))
    }

    /// A caller that may do everything: every request when ACLs are off.
    pub fn unrestricted() -> Self {
        Caller::new(None, None)
    }

    /// The agent's own work (the health checker, start-up, reaping): may do everything.
    pub fn internal() -> Self {
        Caller::unrestricted()
    }

    /// The token's accessor id (`None`: ACLs are off, or an internal caller).
    pub fn accessor_id(&self) -> Option<&str> {
        self.0.accessor_id.as_deref()
    }

    /// Whether the caller may do `access` on `name` of `resource`.
    pub fn allows(&self, resource: Resource, name: &str, access: Access) -> bool {
        self.0
            .authz
            .as_ref()
            .is_none_or(|a| a.allows(resource, name, access))
    }

    /// Whether nothing is ever refused to this caller (no filtering needed).
    pub fn unrestricted_caller(&self) -> bool {
        self.0.authz.is_none()
    }

    /// Whether a listing left something out for this caller.
    pub fn filtered(&self) -> bool {
        self.0.filtered.load(Ordering::Relaxed)
    }

    /// Records that a listing left something out.
    pub fn mark_filtered(&self) {
        self.0.filtered.store(true, Ordering::Relaxed);
    }

    /// Whether the caller may see `service`; records it when not (for the filtered header).
    pub fn sees_service(&self, service: &str) -> bool {
        let ok = self.allows(Resource::Service, service, Access::Read);
        if !ok {
            self.mark_filtered();
        }
        ok
    }

    /// Whether the caller may read `key`; records it when not.
    pub fn sees_key(&self, key: &str) -> bool {
        let ok = self.allows(Resource::Key, key, Access::Read);
        if !ok {
            self.mark_filtered();
        }
        ok
    }
}

/// The one authorization decision: `Ok` if `caller` may do `access` on `name` of `resource`,
/// otherwise [`ServiceError::PermissionDenied`] naming the missing right.
pub fn authorize(caller: &Caller, resource: Resource, name: &str, access: Access) -> Result<()> {
    if caller.allows(resource, name, access) {
        return Ok(());
    }
    let named = !matches!(resource, Resource::Operator | Resource::Acl);
    Err(ServiceError::PermissionDenied {
        right: format!("{resource}:{access}"),
        name: named.then(|| name.to_string()),
    })
}

/// A resolved token, cached until the ACL state changes.
#[derive(Debug, Clone)]
struct Resolved {
    acl_index: u64,
    accessor_id: String,
    expiration_time: Option<Timestamp>,
    authz: Arc<Authorizer>,
}

/// Most cached resolutions; past it the cache starts over.
const CACHE_LIMIT: usize = 10_000;

/// Turns tokens into callers: the settings, and resolutions cached by secret hash and the ACL
/// state's index (a change to any policy or token invalidates them all).
#[derive(Debug)]
pub struct Resolver {
    settings: AclSettings,
    cache: RwLock<HashMap<String, Resolved>>,
}

impl Resolver {
    /// A resolver for these settings.
    pub fn new(settings: AclSettings) -> Self {
        Resolver {
            settings,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Whether ACLs are on.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    fn default_policy(&self) -> DefaultPolicy {
        self.settings.default_policy
    }
}

/// Resolves a request's token (`None`: the anonymous token) into its [`Caller`]. With ACLs off,
/// the unrestricted caller; an unknown or expired secret is [`ServiceError::AclNotFound`].
pub fn resolve(agent: &Agent, secret: Option<&str>) -> Result<Caller> {
    let resolver = agent.acl();
    if !resolver.enabled() {
        return Ok(Caller::unrestricted());
    }
    let hash = secret.map(hash_secret);
    let key = hash.clone().unwrap_or_default();
    let now = Timestamp(now_ms());
    let state = agent.store().read();
    let acl = state.registry.acl();
    let index = acl.index();
    if let Some(hit) = resolver.cache.read().expect("acl cache").get(&key) {
        if hit.acl_index == index {
            if hit.expiration_time.is_some_and(|t| t <= now) {
                return Err(ServiceError::AclNotFound);
            }
            return Ok(Caller::new(
                Some(hit.accessor_id.clone()),
                Some(hit.authz.clone()),
            ));
        }
    }
    let token = acl
        .resolve(hash.as_deref(), now)
        .map_err(|_| ServiceError::AclNotFound)?;
    let authz = Arc::new(acl.authorizer(&token, resolver.default_policy()));
    drop(state);
    let mut cache = resolver.cache.write().expect("acl cache");
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(
        key,
        Resolved {
            acl_index: index,
            accessor_id: token.accessor_id.clone(),
            expiration_time: token.expiration_time,
            authz: authz.clone(),
        },
    );
    Ok(Caller::new(Some(token.accessor_id), Some(authz)))
}

/// The caller DNS answers as: `[acl] dns_token`'s rights, the anonymous token's without it, and
/// nothing at all if the configured token does not resolve.
pub fn dns_caller(agent: &Agent) -> Caller {
    let secret = agent.acl().settings.dns_token.clone();
    resolve(agent, secret.as_deref()).unwrap_or_else(|_| {
        tracing::warn!("acl.dns_token does not resolve to a token; DNS answers nothing");
        Caller::new(
            None,
            Some(Arc::new(Authorizer::new(
                Rules::default(),
                DefaultPolicy::Deny,
            ))),
        )
    })
}

/// The ACL state's index (that of its last change).
pub fn index(agent: &Agent) -> u64 {
    read(agent, |r| r.acl().index())
}

// ---- the ACL operations -------------------------------------------------------------------

fn require_enabled(agent: &Agent) -> Result<()> {
    if agent.acl().enabled() {
        Ok(())
    } else {
        Err(ServiceError::AclDisabled)
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn apply_acl(agent: &Agent, command: AclCommand) -> Result<AclOutcome> {
    let outcome = apply(agent, Command::Acl(command), |r| match r {
        Response::Acl(outcome) => Ok(outcome),
        other => Err(Box::new(other)),
    })
    .await?;
    match outcome {
        AclOutcome::Refused(refusal) => Err(ServiceError::Acl(refusal)),
        other => Ok(other),
    }
}

fn unexpected(outcome: AclOutcome) -> ServiceError {
    ServiceError::Unexpected {
        command: "acl".to_string(),
        response: format!("{outcome:?}"),
    }
}

/// A token just made, with its secret (shown this once).
#[derive(Debug, Clone)]
pub struct Created {
    /// The token as stored.
    pub token: Token,
    /// Its secret.
    pub secret: String,
}

/// `PUT /v1/acl/bootstrap`: the first management token. Works once.
pub async fn bootstrap(agent: &Agent) -> Result<Created> {
    require_enabled(agent)?;
    let secret = new_id();
    let command = AclCommand::Bootstrap {
        accessor_id: new_id(),
        secret_hash: hash_secret(&secret),
        initial: false,
    };
    match apply_acl(agent, command).await? {
        AclOutcome::Token(token) => Ok(Created { token, secret }),
        other => Err(unexpected(other)),
    }
}

/// Creates the configured initial management token if it does not exist yet (idempotent).
pub async fn ensure_initial_management(agent: &Agent) -> Result<()> {
    let Some(secret) = agent.acl().settings.initial_management_token.clone() else {
        return Ok(());
    };
    let hash = hash_secret(&secret);
    if read(agent, |r| {
        r.acl().resolve(Some(&hash), Timestamp(now_ms())).is_ok()
    }) {
        return Ok(());
    }
    let command = AclCommand::Bootstrap {
        accessor_id: new_id(),
        secret_hash: hash,
        initial: true,
    };
    apply_acl(agent, command).await.map(|_| ())
}

/// How often the ACL maintenance task runs.
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The ACL maintenance task (owned by the agent's task tracker while ACLs are on): creates the
/// configured initial management token once the cluster can take writes, and, while this node
/// leads, proposes the removal of expired tokens. Ends when the agent closes.
pub async fn maintain(
    agent: std::sync::Weak<Agent>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut initial_done = false;
    loop {
        {
            let Some(agent) = agent.upgrade() else { return };
            if !initial_done {
                match ensure_initial_management(&agent).await {
                    Ok(()) => initial_done = true,
                    Err(e) => tracing::debug!("initial management token not created yet: {e}"),
                }
            }
            if agent.is_leader() {
                if let Err(e) = reap_expired(&agent).await {
                    tracing::warn!("cannot reap expired ACL tokens: {e}");
                }
            }
        }
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tokio::time::sleep(MAINTAIN_EVERY) => {}
        }
    }
}

/// Proposes the removal of every expired token, if there is one (the leader's reaper).
pub async fn reap_expired(agent: &Agent) -> Result<()> {
    if read(agent, |r| r.acl().has_expired(Timestamp(now_ms()))) {
        apply_acl(agent, AclCommand::Reap).await?;
    }
    Ok(())
}

/// A policy as a client writes it.
#[derive(Debug, Clone)]
pub struct PolicyWrite {
    pub name: String,
    pub description: String,
    pub rules: String,
}

/// Creates a policy (`id: None`) or replaces one.
pub async fn set_policy(
    agent: &Agent,
    caller: &Caller,
    id: Option<String>,
    write: PolicyWrite,
) -> Result<Policy> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Write)?;
    signpost_core::acl::parse_rules(&write.rules).map_err(AclRefusal::from)?;
    let id = match id {
        Some(id) => {
            if read(agent, |r| r.acl().policy(&id).is_none()) {
                return Err(ServiceError::Acl(AclRefusal::NoSuchPolicy(id)));
            }
            id
        }
        None => new_id(),
    };
    let command = AclCommand::SetPolicy(PolicyInput {
        id,
        name: write.name,
        description: write.description,
        rules: write.rules,
    });
    match apply_acl(agent, command).await? {
        AclOutcome::Policy { policy, .. } => Ok(policy),
        other => Err(unexpected(other)),
    }
}

/// One policy by id.
pub fn policy(agent: &Agent, caller: &Caller, id: &str) -> Result<Policy> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Read)?;
    read(agent, |r| r.acl().policy(id))
        .ok_or_else(|| ServiceError::Acl(AclRefusal::NoSuchPolicy(id.to_string())))
}

/// Every policy.
pub fn policies(agent: &Agent, caller: &Caller) -> Result<(u64, Vec<Policy>)> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Read)?;
    Ok(read(agent, |r| (r.acl().index(), r.acl().policies())))
}

/// Deletes a policy; tokens that link it lose the link.
pub async fn delete_policy(agent: &Agent, caller: &Caller, id: &str) -> Result<()> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Write)?;
    apply_acl(agent, AclCommand::DeletePolicy { id: id.to_string() })
        .await
        .map(|_| ())
}

/// A token as a client writes it.
#[derive(Debug, Clone, Default)]
pub struct TokenWrite {
    /// Given on create, or generated.
    pub accessor_id: Option<String>,
    /// Given on create, or generated; ignored on update (a secret never changes).
    pub secret: Option<String>,
    pub description: String,
    pub policies: Vec<PolicyRef>,
    /// An absolute expiry.
    pub expiration_time: Option<Timestamp>,
    /// An expiry relative to now, in milliseconds.
    pub expiration_ttl_ms: Option<u64>,
}

/// Creates a token; its secret is returned this once.
pub async fn create_token(agent: &Agent, caller: &Caller, write: TokenWrite) -> Result<Created> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Write)?;
    let secret = write.secret.unwrap_or_else(new_id);
    let now = now_ms();
    let expiration_time = match (write.expiration_time, write.expiration_ttl_ms) {
        (Some(t), _) => Some(t),
        (None, Some(ttl)) => Some(Timestamp(now.saturating_add(ttl))),
        (None, None) => None,
    };
    let command = AclCommand::SetToken(TokenInput {
        accessor_id: write.accessor_id.unwrap_or_else(new_id),
        secret_hash: Some(hash_secret(&secret)),
        description: write.description,
        policies: write.policies,
        expiration_time,
    });
    match apply_acl(agent, command).await? {
        AclOutcome::Token(token) => Ok(Created { token, secret }),
        other => Err(unexpected(other)),
    }
}

/// Updates a token's description and policies.
pub async fn update_token(
    agent: &Agent,
    caller: &Caller,
    accessor_id: &str,
    write: TokenWrite,
) -> Result<Token> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Write)?;
    let command = AclCommand::SetToken(TokenInput {
        accessor_id: accessor_id.to_string(),
        secret_hash: None,
        description: write.description,
        policies: write.policies,
        expiration_time: write.expiration_time,
    });
    match apply_acl(agent, command).await? {
        AclOutcome::Token(token) => Ok(token),
        other => Err(unexpected(other)),
    }
}

/// One token by accessor id.
pub fn token(agent: &Agent, caller: &Caller, accessor_id: &str) -> Result<Token> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Read)?;
    read(agent, |r| r.acl().token(accessor_id))
        .filter(|t| !t.expired(Timestamp(now_ms())))
        .ok_or_else(|| ServiceError::Acl(AclRefusal::NoSuchToken(accessor_id.to_string())))
}

/// The caller's own token (no right needed beyond holding it).
pub fn token_self(agent: &Agent, caller: &Caller) -> Result<Token> {
    require_enabled(agent)?;
    let accessor = caller.accessor_id().ok_or(ServiceError::AclNotFound)?;
    read(agent, |r| r.acl().token(accessor)).ok_or(ServiceError::AclNotFound)
}

/// Every token that has not expired.
pub fn tokens(agent: &Agent, caller: &Caller) -> Result<(u64, Vec<Token>)> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Read)?;
    let now = Timestamp(now_ms());
    Ok(read(agent, |r| {
        let tokens = r
            .acl()
            .tokens()
            .into_iter()
            .filter(|t| !t.expired(now))
            .collect();
        (r.acl().index(), tokens)
    }))
}

/// Deletes a token.
pub async fn delete_token(agent: &Agent, caller: &Caller, accessor_id: &str) -> Result<()> {
    require_enabled(agent)?;
    authorize(caller, Resource::Acl, "", Access::Write)?;
    apply_acl(
        agent,
        AclCommand::DeleteToken {
            accessor_id: accessor_id.to_string(),
        },
    )
    .await
    .map(|_| ())
}
