//! Access control: Consul's rule language, policies, tokens and the authorizer.
//!
//! - [`parse_rules`] reads a policy's rules in Consul's HCL form (`service "api" { policy =
//!   "write" }`, `operator = "read"`) or its JSON form (`{"service": {"api": {"policy":
//!   "write"}}}`) into [`Rules`]; a mistake is a typed [`RulesError`] naming the line or the rule.
//! - [`Authorizer`] answers `allows(resource, name, access)` for a token's merged rules: an exact
//!   rule beats a prefix rule, the longest prefix wins, `deny` wins a tie between policies, `write`
//!   implies `read`, and with no matching rule the configured default decides.
//! - [`Acl`] is the replicated state (policies, tokens, whether bootstrap happened), changed only
//!   by [`AclCommand`]s through [`crate::Registry::apply`]. Secrets are never stored: a token
//!   keeps the SHA-256 of its secret ([`hash_secret`]). Identifiers and secrets are made by the
//!   caller (the agent) and carried in the command, so every replica applies the same thing.
//!   Expiry is compared with the time passed in; [`AclCommand::Reap`] removes expired tokens.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Timestamp;

/// Consul's id of the built-in policy that allows everything.
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The built-in management policy's name.
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";
/// Consul's accessor id of the anonymous token (the one a request without a token uses).
pub const ANONYMOUS_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";

/// The rules of the built-in management policy: write on everything.
pub const MANAGEMENT_RULES: &str = r#"acl = "write"
operator = "write"
agent_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
node_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
"#;

/// The hex SHA-256 of a token's secret: what the state stores and looks tokens up by.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    out
}

// ---- rules ----------------------------------------------------------------------------------

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Deny,
    Read,
    Write,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "deny" => Some(Level::Deny),
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            _ => None,
        }
    }

    /// Whether this level grants `access`.
    pub fn grants(self, access: Access) -> bool {
        match (self, access) {
            (Level::Deny, _) => false,
            (Level::Read, Access::Read) => true,
            (Level::Read, Access::Write) => false,
            (Level::Write, _) => true,
        }
    }

    /// Two policies' levels for the same rule merged: `deny` wins, then `write` over `read`.
    fn merge(self, other: Level) -> Level {
        if self == Level::Deny || other == Level::Deny {
            Level::Deny
        } else {
            self.max(other)
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Service,
    Key,
    Node,
    Agent,
    Operator,
    Acl,
}

impl Resource {
    /// The rule keyword (`service`, `key`, ...).
    pub fn keyword(self) -> &'static str {
        match self {
            Resource::Service => "service",
            Resource::Key => "key",
            Resource::Node => "node",
            Resource::Agent => "agent",
            Resource::Operator => "operator",
            Resource::Acl => "acl",
        }
    }

    fn slot(self) -> usize {
        match self {
            Resource::Service => 0,
            Resource::Key => 1,
            Resource::Node => 2,
            Resource::Agent => 3,
            Resource::Operator | Resource::Acl => usize::MAX,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// One named resource's rules: exact names and prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NamedRules {
    exact: BTreeMap<String, Level>,
    prefix: BTreeMap<String, Level>,
}

impl NamedRules {
    fn decide(&self, name: &str) -> Option<Level> {
        if let Some(level) = self.exact.get(name) {
            return Some(*level);
        }
        // Every prefix of `name` sorts at or before it, and a longer prefix after a shorter one:
        // walking back from `name`, the first prefix met is the longest.
        self.prefix
            .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(name)))
            .rev()
            .find(|(p, _)| name.starts_with(p.as_str()))
            .map(|(_, level)| *level)
    }

    fn merge(&mut self, other: &NamedRules) {
        for (name, level) in &other.exact {
            merge_into(&mut self.exact, name, *level);
        }
        for (name, level) in &other.prefix {
            merge_into(&mut self.prefix, name, *level);
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }
}

fn merge_into(map: &mut BTreeMap<String, Level>, name: &str, level: Level) {
    map.entry(name.to_string())
        .and_modify(|l| *l = l.merge(level))
        .or_insert(level);
}

/// A policy's rules, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    named: [NamedRules; 4],
    operator: Option<Level>,
    acl: Option<Level>,
}

impl Rules {
    /// Adds `other`'s rules; where both have a rule for the same thing, `deny` wins, then
    /// `write`.
    pub fn merge(&mut self, other: &Rules) {
        for (mine, theirs) in self.named.iter_mut().zip(&other.named) {
            mine.merge(theirs);
        }
        self.operator = merge_opt(self.operator, other.operator);
        self.acl = merge_opt(self.acl, other.acl);
    }

    /// The level the rules give `name` of `resource`, if any rule matches.
    pub fn decide(&self, resource: Resource, name: &str) -> Option<Level> {
        match resource {
            Resource::Operator => self.operator,
            Resource::Acl => self.acl,
            named => self.named[named.slot()].decide(name),
        }
    }

    /// True if there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.named.iter().all(NamedRules::is_empty) && self.operator.is_none() && self.acl.is_none()
    }
}

fn merge_opt(a: Option<Level>, b: Option<Level>) -> Option<Level> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Why a policy's rules were refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RulesError {
    /// The text is not HCL.
    #[error("rules are not valid HCL (line {line}, column {column}): {message}")]
    Hcl {
        line: usize,
        column: usize,
        message: String,
    },
    /// The text looks like JSON but is not.
    #[error("rules are not valid JSON (line {line}, column {column}): {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// A rule keyword this language does not have.
    #[error("unknown rule {rule:?}: expected one of service, service_prefix, key, key_prefix, node, node_prefix, agent, agent_prefix, operator, acl")]
    UnknownRule { rule: String },
    /// A policy value that is not `read`, `write` or `deny`.
    #[error("rule {rule}: policy {value:?} is not one of read, write, deny")]
    BadPolicy { rule: String, value: String },
    /// A block without `policy = ...`.
    #[error("rule {rule}: missing policy")]
    MissingPolicy { rule: String },
    /// The rule is not written the way the language expects (e.g. a block without a name).
    #[error("rule {rule}: {problem}")]
    Shape { rule: String, problem: String },
    /// The same rule twice in one policy.
    #[error("rule {rule} is given twice")]
    Duplicate { rule: String },
}

/// A rule keyword: the resource and whether it is a prefix rule.
fn keyword(word: &str) -> Option<(Resource, bool)> {
    Some(match word {
        "service" => (Resource::Service, false),
        "service_prefix" => (Resource::Service, true),
        "key" => (Resource::Key, false),
        "key_prefix" => (Resource::Key, true),
        "node" => (Resource::Node, false),
        "node_prefix" => (Resource::Node, true),
        "agent" => (Resource::Agent, false),
        "agent_prefix" => (Resource::Agent, true),
        "operator" => (Resource::Operator, false),
        "acl" => (Resource::Acl, false),
        _ => return None,
    })
}

/// Attributes Consul's rules may carry inside a block that this agent has no use for.
const IGNORED_ATTRIBUTES: [&str; 1] = ["intentions"];

/// Builds [`Rules`] one rule at a time, refusing duplicates.
#[derive(Default)]
struct Builder {
    rules: Rules,
}

impl Builder {
    fn plain(&mut self, word: &str, value: Option<&str>) -> Result<(), RulesError> {
        let (resource, _) = keyword(word).ok_or_else(|| RulesError::UnknownRule {
            rule: word.to_string(),
        })?;
        let slot = match resource {
            Resource::Operator => &mut self.rules.operator,
            Resource::Acl => &mut self.rules.acl,
            _ => {
                return Err(RulesError::Shape {
                    rule: word.to_string(),
                    problem: format!("expected {word} \"<name>\" {{ policy = \"read\" }}"),
                })
            }
        };
        let value = value.ok_or_else(|| RulesError::Shape {
            rule: word.to_string(),
            problem: format!("expected {word} = \"read\" | \"write\" | \"deny\""),
        })?;
        let level = Level::parse(value).ok_or_else(|| RulesError::BadPolicy {
            rule: word.to_string(),
            value: value.to_string(),
        })?;
        if slot.replace(level).is_some() {
            return Err(RulesError::Duplicate {
                rule: word.to_string(),
            });
        }
        Ok(())
    }

    fn named(&mut self, word: &str, name: &str, policy: Option<&str>) -> Result<(), RulesError> {
        let rule = format!("{word} {name:?}");
        let (resource, prefix) = keyword(word).ok_or_else(|| RulesError::UnknownRule {
            rule: word.to_string(),
        })?;
        if matches!(resource, Resource::Operator | Resource::Acl) {
            return Err(RulesError::Shape {
                rule,
                problem: format!("expected {word} = \"read\" | \"write\" | \"deny\""),
            });
        }
        let value = policy.ok_or_else(|| RulesError::MissingPolicy { rule: rule.clone() })?;
        let level = Level::parse(value).ok_or_else(|| RulesError::BadPolicy {
            rule: rule.clone(),
            value: value.to_string(),
        })?;
        let named = &mut self.rules.named[resource.slot()];
        let map = if prefix {
            &mut named.prefix
        } else {
            &mut named.exact
        };
        if map.insert(name.to_string(), level).is_some() {
            return Err(RulesError::Duplicate { rule });
        }
        Ok(())
    }
}

/// Parses a policy's rules, in Consul's HCL form or (text starting with `{`) its JSON form.
pub fn parse_rules(text: &str) -> Result<Rules, RulesError> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_hcl(text)
    }
}

fn parse_hcl(text: &str) -> Result<Rules, RulesError> {
    let body = hcl::parse(text).map_err(|e| match e {
        hcl::Error::Parse(p) => RulesError::Hcl {
            line: p.location().line(),
            column: p.location().column(),
            message: p.message().to_string(),
        },
        other => RulesError::Hcl {
            line: 0,
            column: 0,
            message: other.to_string(),
        },
    })?;
    let mut builder = Builder::default();
    for structure in body.iter() {
        match structure {
            hcl::Structure::Attribute(attr) => {
                let value = match attr.expr() {
                    hcl::Expression::String(s) => Some(s.as_str()),
                    _ => None,
                };
                builder.plain(attr.key(), value)?;
            }
            hcl::Structure::Block(block) => {
                let word = block.identifier();
                let name = match block.labels() {
                    [label] => label.as_str(),
                    _ => {
                        keyword(word).ok_or_else(|| RulesError::UnknownRule {
                            rule: word.to_string(),
                        })?;
                        return Err(RulesError::Shape {
                            rule: word.to_string(),
                            problem: "a block takes exactly one name".to_string(),
                        });
                    }
                };
                let rule = format!("{word} {name:?}");
                let mut policy = None;
                for inner in block.body().iter() {
                    match inner {
                        hcl::Structure::Attribute(a) if a.key() == "policy" => match a.expr() {
                            hcl::Expression::String(s) => policy = Some(s.as_str()),
                            _ => {
                                return Err(RulesError::Shape {
                                    rule,
                                    problem: "policy must be a string".to_string(),
                                })
                            }
                        },
                        hcl::Structure::Attribute(a) if IGNORED_ATTRIBUTES.contains(&a.key()) => {}
                        hcl::Structure::Attribute(a) => {
                            return Err(RulesError::Shape {
                                rule,
                                problem: format!("unknown attribute {:?}", a.key()),
                            })
                        }
                        hcl::Structure::Block(b) => {
                            return Err(RulesError::Shape {
                                rule,
                                problem: format!("unexpected block {:?}", b.identifier()),
                            })
                        }
                    }
                }
                builder.named(word, name, policy)?;
            }
        }
    }
    Ok(builder.rules)
}

fn parse_json(text: &str) -> Result<Rules, RulesError> {
    use serde_json::Value;
    let value: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| RulesError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
    let mut builder = Builder::default();
    for (word, v) in &value {
        match v {
            Value::String(s) => builder.plain(word, Some(s))?,
            Value::Object(names) => {
                for (name, body) in names {
                    let rule = format!("{word} {name:?}");
                    let Value::Object(body) = body else {
                        return Err(RulesError::Shape {
                            rule,
                            problem: "expected an object {\"policy\": ...}".to_string(),
                        });
                    };
                    let mut policy = None;
                    for (k, v) in body {
                        match (k.as_str(), v) {
                            ("policy", Value::String(s)) => policy = Some(s.as_str()),
                            ("policy", _) => {
                                return Err(RulesError::Shape {
                                    rule,
                                    problem: "policy must be a string".to_string(),
                                })
                            }
                            (k, _) if IGNORED_ATTRIBUTES.contains(&k) => {}
                            (k, _) => {
                                return Err(RulesError::Shape {
                                    rule,
                                    problem: format!("unknown attribute {k:?}"),
                                })
                            }
                        }
                    }
                    builder.named(word, name, policy)?;
                }
            }
            _ => {
                keyword(word).ok_or_else(|| RulesError::UnknownRule { rule: word.clone() })?;
                return Err(RulesError::Shape {
                    rule: word.clone(),
                    problem: "expected a string or an object".to_string(),
                });
            }
        }
    }
    Ok(builder.rules)
}

// ---- the authorizer -----------------------------------------------------------------------

/// What decides when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    Allow,
    Deny,
}

/// A token's merged rules and the default policy: answers whether it may do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    rules: Rules,
    default: DefaultPolicy,
}

impl Authorizer {
    /// An authorizer over `rules` (already merged) with `default` when none matches.
    pub fn new(rules: Rules, default: DefaultPolicy) -> Self {
        Authorizer { rules, default }
    }

    /// An authorizer that allows everything (the agent's own internal calls).
    pub fn management() -> Self {
        Authorizer::new(
            parse_rules(MANAGEMENT_RULES).expect("the built-in rules parse"),
            DefaultPolicy::Allow,
        )
    }

    /// Whether `access` to `name` of `resource` is allowed (`name` is ignored for `operator`
    /// and `acl`).
    pub fn allows(&self, resource: Resource, name: &str, access: Access) -> bool {
        match self.rules.decide(resource, name) {
            Some(level) => level.grants(access),
            None => self.default == DefaultPolicy::Allow,
        }
    }
}

// ---- state ----------------------------------------------------------------------------------

/// A policy: a named set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The rules as written (HCL or JSON); they parse (checked when the policy was set).
    pub rules: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A token's link to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLink {
    pub id: String,
    pub name: String,
}

/// A token. Its secret is not kept, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor_id: String,
    /// [`hash_secret`] of the secret; empty for the anonymous token, which has no secret.
    pub secret_hash: String,
    pub description: String,
    pub policies: Vec<PolicyLink>,
    pub create_time: Timestamp,
    pub expiration_time: Option<Timestamp>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Token {
    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expiration_time.is_some_and(|t| t <= now)
    }

    /// Whether it carries the built-in management policy.
    pub fn is_management(&self) -> bool {
        self.policies.iter().any(|p| p.id == MANAGEMENT_POLICY_ID)
    }

    fn anonymous() -> Token {
        Token {
            accessor_id: ANONYMOUS_ACCESSOR_ID.to_string(),
            secret_hash: String::new(),
            description: "Anonymous Token".to_string(),
            policies: vec![],
            create_time: Timestamp(0),
            expiration_time: None,
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// A policy named in a token write: by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyRef {
    Id(String),
    Name(String),
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyRef::Id(id) => write!(f, "id {id:?}"),
            PolicyRef::Name(name) => write!(f, "name {name:?}"),
        }
    }
}

/// A policy as written by a client (create or update by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInput {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: String,
}

/// A token as written by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInput {
    pub accessor_id: String,
    /// The new token's secret hash; `None` on an update (the secret never changes).
    pub secret_hash: Option<String>,
    pub description: String,
    pub policies: Vec<PolicyRef>,
    pub expiration_time: Option<Timestamp>,
}

/// Every way the ACL state changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclCommand {
    /// Creates a management token. Works once (`initial: false`, `PUT /v1/acl/bootstrap`);
    /// with `initial: true` (the configured initial management token) it is idempotent: nothing
    /// happens if a token with this secret exists.
    Bootstrap {
        accessor_id: String,
        secret_hash: String,
        initial: bool,
    },
    /// Creates or replaces a policy (by id).
    SetPolicy(PolicyInput),
    /// Deletes a policy and detaches it from every token.
    DeletePolicy { id: String },
    /// Creates a token (`secret_hash` given) or updates one.
    SetToken(TokenInput),
    /// Deletes a token.
    DeleteToken { accessor_id: String },
    /// Removes every token expired at the command's time.
    Reap,
}

/// Why an ACL command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AclRefusal {
    #[error("ACL bootstrap no longer allowed")]
    AlreadyBootstrapped,
    #[error("policy {0} not found")]
    NoSuchPolicy(String),
    #[error("token {0} not found")]
    NoSuchToken(String),
    #[error("a policy named {0:?} already exists")]
    DuplicateName(String),
    #[error("a token with this accessor id or secret already exists")]
    DuplicateToken,
    #[error("invalid policy name {0:?}: use 1 to 128 letters, digits, '-' or '_'")]
    BadName(String),
    #[error("the built-in {0} cannot be changed or deleted")]
    Builtin(String),
    #[error("a token's expiration time cannot be changed")]
    ExpirationChanged,
    #[error("expiration time is not in the future")]
    ExpirationPast,
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// What an ACL command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclOutcome {
    Token(Token),
    Policy {
        policy: Policy,
        created: bool,
    },
    Deleted,
    /// Accessor ids of the tokens removed by a reap.
    Reaped(Vec<String>),
    /// The command needed no change (an initial management token that exists).
    Unchanged,
    Refused(AclRefusal),
}

/// Why a secret does not resolve to a usable token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TokenError {
    /// No token has this secret, or it has expired.
    #[error("ACL not found")]
    NotFound,
}

/// The replicated ACL state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// Policies by id (the built-in management policy is not stored: see [`Acl::policy`]).
    policies: BTreeMap<String, Policy>,
    /// Tokens by accessor id.
    tokens: BTreeMap<String, Token>,
    /// Accessor ids by secret hash.
    by_secret: BTreeMap<String, String>,
    /// Whether `PUT /v1/acl/bootstrap` (or the initial management token) has run.
    bootstrapped: bool,
    /// Index of the last change: what cached resolutions compare against.
    index: u64,
}

fn management_policy() -> Policy {
    Policy {
        id: MANAGEMENT_POLICY_ID.to_string(),
        name: MANAGEMENT_POLICY_NAME.to_string(),
        description: "Builtin Policy that grants unlimited access".to_string(),
        rules: MANAGEMENT_RULES.to_string(),
        create_index: 0,
        modify_index: 0,
    }
}

fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Acl {
    /// Index of the last change.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether bootstrap has happened.
    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// A policy by id, the built-in one included.
    pub fn policy(&self, id: &str) -> Option<Policy> {
        if id == MANAGEMENT_POLICY_ID {
            return Some(management_policy());
        }
        self.policies.get(id).cloned()
    }

    /// A policy by name, the built-in one included.
    pub fn policy_by_name(&self, name: &str) -> Option<Policy> {
        if name == MANAGEMENT_POLICY_NAME {
            return Some(management_policy());
        }
        self.policies.values().find(|p| p.name == name).cloned()
    }

    /// Every policy, the built-in one first.
    pub fn policies(&self) -> Vec<Policy> {
        std::iter::once(management_policy())
            .chain(self.policies.values().cloned())
            .collect()
    }

    /// A token by accessor id (the anonymous token always exists).
    pub fn token(&self, accessor_id: &str) -> Option<Token> {
        match self.tokens.get(accessor_id) {
            Some(t) => Some(t.clone()),
            None if accessor_id == ANONYMOUS_ACCESSOR_ID => Some(Token::anonymous()),
            None => None,
        }
    }

    /// Every token, the anonymous one included, by accessor id.
    pub fn tokens(&self) -> Vec<Token> {
        let mut all: Vec<Token> = self.tokens.values().cloned().collect();
        if !self.tokens.contains_key(ANONYMOUS_ACCESSOR_ID) {
            all.push(Token::anonymous());
            all.sort_by(|a, b| a.accessor_id.cmp(&b.accessor_id));
        }
        all
    }

    /// The token whose secret hashes to `secret_hash`, if it exists and has not expired at
    /// `now`; `None` is the anonymous token.
    pub fn resolve(&self, secret_hash: Option<&str>, now: Timestamp) -> Result<Token, TokenError> {
        let Some(hash) = secret_hash else {
            return Ok(self
                .token(ANONYMOUS_ACCESSOR_ID)
                .expect("the anonymous token always exists"));
        };
        let token = self
            .by_secret
            .get(hash)
            .and_then(|a| self.tokens.get(a))
            .ok_or(TokenError::NotFound)?;
        if token.expired(now) {
            return Err(TokenError::NotFound);
        }
        Ok(token.clone())
    }

    /// The authorizer for `token`: its policies' rules merged, `default` where none matches.
    pub fn authorizer(&self, token: &Token, default: DefaultPolicy) -> Authorizer {
        let mut rules = Rules::default();
        for link in &token.policies {
            if let Some(policy) = self.policy(&link.id) {
                // Rules were checked when the policy was set; a policy that no longer parses
                // (a rule language change) grants nothing.
                if let Ok(parsed) = parse_rules(&policy.rules) {
                    rules.merge(&parsed);
                }
            }
        }
        Authorizer::new(rules, default)
    }

    /// Applies `command` at log `index` and time `now`.
    pub fn apply(&mut self, index: u64, now: Timestamp, command: &AclCommand) -> AclOutcome {
        let outcome = match command {
            AclCommand::Bootstrap {
                accessor_id,
                secret_hash,
                initial,
            } => self.bootstrap(index, now, accessor_id, secret_hash, *initial),
            AclCommand::SetPolicy(input) => self.set_policy(index, input),
            AclCommand::DeletePolicy { id } => self.delete_policy(index, id),
            AclCommand::SetToken(input) => self.set_token(index, now, input),
            AclCommand::DeleteToken { accessor_id } => self.delete_token(index, accessor_id),
            AclCommand::Reap => self.reap(index, now),
        };
        outcome.unwrap_or_else(AclOutcome::Refused)
    }

    fn insert_token(&mut self, token: Token) {
        if !token.secret_hash.is_empty() {
            self.by_secret
                .insert(token.secret_hash.clone(), token.accessor_id.clone());
        }
        self.tokens.insert(token.accessor_id.clone(), token);
    }

    fn remove_token(&mut self, accessor_id: &str) -> Option<Token> {
        let token = self.tokens.remove(accessor_id)?;
        self.by_secret.remove(&token.secret_hash);
        Some(token)
    }

    fn bootstrap(
        &mut self,
        index: u64,
        now: Timestamp,
        accessor_id: &str,
        secret_hash: &str,
        initial: bool,
    ) -> Result<AclOutcome, AclRefusal> {
        if initial && self.by_secret.contains_key(secret_hash) {
            return Ok(AclOutcome::Unchanged);
        }
        if !initial && self.bootstrapped {
            return Err(AclRefusal::AlreadyBootstrapped);
        }
        if self.tokens.contains_key(accessor_id) || self.by_secret.contains_key(secret_hash) {
            return Err(AclRefusal::DuplicateToken);
        }
        let token = Token {
            accessor_id: accessor_id.to_string(),
            secret_hash: secret_hash.to_string(),
            description: if initial {
                "Initial Management Token".to_string()
            } else {
                "Bootstrap Token (Global Management)".to_string()
            },
            policies: vec![PolicyLink {
                id: MANAGEMENT_POLICY_ID.to_string(),
                name: MANAGEMENT_POLICY_NAME.to_string(),
            }],
            create_time: now,
            expiration_time: None,
            create_index: index,
            modify_index: index,
        };
        self.insert_token(token.clone());
        self.bootstrapped = true;
        self.index = index;
        Ok(AclOutcome::Token(token))
    }

    fn set_policy(&mut self, index: u64, input: &PolicyInput) -> Result<AclOutcome, AclRefusal> {
        if input.id == MANAGEMENT_POLICY_ID || input.name == MANAGEMENT_POLICY_NAME {
            return Err(AclRefusal::Builtin(format!(
                "policy {MANAGEMENT_POLICY_NAME}"
            )));
        }
        if !valid_policy_name(&input.name) {
            return Err(AclRefusal::BadName(input.name.clone()));
        }
        parse_rules(&input.rules)?;
        if self
            .policies
            .values()
            .any(|p| p.name == input.name && p.id != input.id)
        {
            return Err(AclRefusal::DuplicateName(input.name.clone()));
        }
        let previous = self.policies.get(&input.id);
        let created = previous.is_none();
        let policy = Policy {
            id: input.id.clone(),
            name: input.name.clone(),
            description: input.description.clone(),
            rules: input.rules.clone(),
            create_index: previous.map_or(index, |p| p.create_index),
            modify_index: index,
        };
        if !created {
            // Tokens show the policy's current name.
            for token in self.tokens.values_mut() {
                for link in token.policies.iter_mut().filter(|l| l.id == policy.id) {
                    link.name = policy.name.clone();
                }
            }
        }
        self.policies.insert(policy.id.clone(), policy.clone());
        self.index = index;
        Ok(AclOutcome::Policy { policy, created })
    }

    fn delete_policy(&mut self, index: u64, id: &str) -> Result<AclOutcome, AclRefusal> {
        if id == MANAGEMENT_POLICY_ID {
            return Err(AclRefusal::Builtin(format!(
                "policy {MANAGEMENT_POLICY_NAME}"
            )));
        }
        if self.policies.remove(id).is_none() {
            return Err(AclRefusal::NoSuchPolicy(id.to_string()));
        }
        for token in self.tokens.values_mut() {
            let before = token.policies.len();
            token.policies.retain(|l| l.id != id);
            if token.policies.len() != before {
                token.modify_index = index;
            }
        }
        self.index = index;
        Ok(AclOutcome::Deleted)
    }

    fn link(&self, reference: &PolicyRef) -> Result<PolicyLink, AclRefusal> {
        let policy = match reference {
            PolicyRef::Id(id) => self.policy(id),
            PolicyRef::Name(name) => self.policy_by_name(name),
        }
        .ok_or_else(|| AclRefusal::NoSuchPolicy(reference.to_string()))?;
        Ok(PolicyLink {
            id: policy.id,
            name: policy.name,
        })
    }

    fn set_token(
        &mut self,
        index: u64,
        now: Timestamp,
        input: &TokenInput,
    ) -> Result<AclOutcome, AclRefusal> {
        let mut policies: Vec<PolicyLink> = Vec::with_capacity(input.policies.len());
        for reference in &input.policies {
            let link = self.link(reference)?;
            if !policies.iter().any(|l| l.id == link.id) {
                policies.push(link);
            }
        }
        let token = match &input.secret_hash {
            Some(secret_hash) => {
                if self.tokens.contains_key(&input.accessor_id)
                    || input.accessor_id == ANONYMOUS_ACCESSOR_ID
                    || self.by_secret.contains_key(secret_hash)
                {
                    return Err(AclRefusal::DuplicateToken);
                }
                if input.expiration_time.is_some_and(|t| t <= now) {
                    return Err(AclRefusal::ExpirationPast);
                }
                Token {
                    accessor_id: input.accessor_id.clone(),
                    secret_hash: secret_hash.clone(),
                    description: input.description.clone(),
                    policies,
                    create_time: now,
                    expiration_time: input.expiration_time,
                    create_index: index,
                    modify_index: index,
                }
            }
            None => {
                let previous = self
                    .token(&input.accessor_id)
                    .filter(|t| !t.expired(now))
                    .ok_or_else(|| AclRefusal::NoSuchToken(input.accessor_id.clone()))?;
                if input
                    .expiration_time
                    .is_some_and(|t| Some(t) != previous.expiration_time)
                {
                    return Err(AclRefusal::ExpirationChanged);
                }
                Token {
                    description: input.description.clone(),
                    policies,
                    modify_index: index,
                    create_index: if previous.create_index == 0 {
                        index
                    } else {
                        previous.create_index
                    },
                    ..previous
                }
            }
        };
        self.insert_token(token.clone());
        self.index = index;
        Ok(AclOutcome::Token(token))
    }

    fn delete_token(&mut self, index: u64, accessor_id: &str) -> Result<AclOutcome, AclRefusal> {
        if accessor_id == ANONYMOUS_ACCESSOR_ID {
            return Err(AclRefusal::Builtin("anonymous token".to_string()));
        }
        self.remove_token(accessor_id)
            .ok_or_else(|| AclRefusal::NoSuchToken(accessor_id.to_string()))?;
        self.index = index;
        Ok(AclOutcome::Deleted)
    }

    fn reap(&mut self, index: u64, now: Timestamp) -> Result<AclOutcome, AclRefusal> {
        let expired: Vec<String> = self
            .tokens
            .values()
            .filter(|t| t.expired(now))
            .map(|t| t.accessor_id.clone())
            .collect();
        if expired.is_empty() {
            return Ok(AclOutcome::Unchanged);
        }
        for accessor in &expired {
            self.remove_token(accessor);
        }
        self.index = index;
        Ok(AclOutcome::Reaped(expired))
    }

    /// Whether any token has expired at `now` (the leader proposes a reap when so).
    pub fn has_expired(&self, now: Timestamp) -> bool {
        self.tokens.values().any(|t| t.expired(now))
    }
}

#[cfg(test)]
mod tests;
