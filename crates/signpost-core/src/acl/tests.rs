use super::*;

fn authz(rules: &str, default: DefaultPolicy) -> Authorizer {
    Authorizer::new(parse_rules(rules).unwrap(), default)
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

#[test]
fn hcl_rules_parse_every_keyword() {
    let rules = parse_rules(
        r#"
        service "api" { policy = "write" }
        service_prefix "" { policy = "read" }
        key "locked" { policy = "deny" }
        key_prefix "app/" { policy = "write" }
        node "n1" { policy = "read" }
        node_prefix "" { policy = "deny" }
        agent "a1" { policy = "write" }
        agent_prefix "" { policy = "read" }
        operator = "read"
        acl = "write"
        "#,
    )
    .unwrap();
    assert_eq!(rules.decide(Resource::Service, "api"), Some(Level::Write));
    assert_eq!(rules.decide(Resource::Service, "web"), Some(Level::Read));
    assert_eq!(rules.decide(Resource::Key, "locked"), Some(Level::Deny));
    assert_eq!(rules.decide(Resource::Key, "app/x"), Some(Level::Write));
    assert_eq!(rules.decide(Resource::Key, "other"), None);
    assert_eq!(rules.decide(Resource::Node, "n1"), Some(Level::Read));
    assert_eq!(rules.decide(Resource::Node, "n2"), Some(Level::Deny));
    assert_eq!(rules.decide(Resource::Agent, "a1"), Some(Level::Write));
    assert_eq!(rules.decide(Resource::Agent, "a2"), Some(Level::Read));
    assert_eq!(rules.decide(Resource::Operator, ""), Some(Level::Read));
    assert_eq!(rules.decide(Resource::Acl, ""), Some(Level::Write));
}

#[test]
fn json_rules_read_the_same_as_hcl() {
    let hcl = parse_rules(
        r#"service "api" { policy = "write" }
key_prefix "" { policy = "read" }
operator = "read""#,
    )
    .unwrap();
    let json = parse_rules(
        r#"{"service": {"api": {"policy": "write"}}, "key_prefix": {"": {"policy": "read"}}, "operator": "read"}"#,
    )
    .unwrap();
    assert_eq!(hcl, json);
    assert!(!hcl.is_empty());
}

#[test]
fn hcl_syntax_error_names_the_line() {
    let err =
        parse_rules("service \"a\" { policy = \"read\" }\nservice \"b\" { policy = ").unwrap_err();
    match err {
        RulesError::Hcl { line, .. } => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_syntax_error_names_the_line() {
    let err = parse_rules("{\n\"service\": {\n\"a\": }").unwrap_err();
    match err {
        RulesError::Json { line, .. } => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn semantic_errors_name_the_rule() {
    assert_eq!(
        parse_rules(r#"service "api" { policy = "reed" }"#).unwrap_err(),
        RulesError::BadPolicy {
            rule: "service \"api\"".into(),
            value: "reed".into()
        }
    );
    assert_eq!(
        parse_rules(r#"servce "api" { policy = "read" }"#).unwrap_err(),
        RulesError::UnknownRule {
            rule: "servce".into()
        }
    );
    assert_eq!(
        parse_rules(r#"key "a" { }"#).unwrap_err(),
        RulesError::MissingPolicy {
            rule: "key \"a\"".into()
        }
    );
    assert_eq!(
        parse_rules(r#"operator = "admin""#).unwrap_err(),
        RulesError::BadPolicy {
            rule: "operator".into(),
            value: "admin".into()
        }
    );
    assert!(matches!(
        parse_rules(r#"service = "read""#).unwrap_err(),
        RulesError::Shape { rule, .. } if rule == "service"
    ));
    assert!(matches!(
        parse_rules("key \"a\" { policy = \"read\" }\nkey \"a\" { policy = \"write\" }")
            .unwrap_err(),
        RulesError::Duplicate { .. }
    ));
    assert!(matches!(
        parse_rules(r#"{"service": {"api": {"policy": "sure"}}}"#).unwrap_err(),
        RulesError::BadPolicy { rule, .. } if rule == "service \"api\""
    ));
    // The error text names the rule, for the 400 body.
    let text = parse_rules(r#"service "api" { policy = "reed" }"#)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("service \"api\"") && text.contains("reed"),
        "{text}"
    );
}

#[test]
fn exact_beats_prefix_and_longest_prefix_wins() {
    let a = authz(
        r#"
        service_prefix "" { policy = "write" }
        service_prefix "pay" { policy = "deny" }
        service_prefix "payments-" { policy = "read" }
        service "pay" { policy = "write" }
        "#,
        DefaultPolicy::Deny,
    );
    assert!(a.allows(Resource::Service, "web", Access::Write));
    assert!(
        a.allows(Resource::Service, "pay", Access::Write),
        "exact beats prefix"
    );
    assert!(!a.allows(Resource::Service, "payroll", Access::Read));
    assert!(a.allows(Resource::Service, "payments-eu", Access::Read));
    assert!(!a.allows(Resource::Service, "payments-eu", Access::Write));
}

#[test]
fn write_implies_read_and_deny_denies_both() {
    let a = authz(
        r#"key "w" { policy = "write" }
key "d" { policy = "deny" }
key "r" { policy = "read" }"#,
        DefaultPolicy::Allow,
    );
    assert!(a.allows(Resource::Key, "w", Access::Read));
    assert!(a.allows(Resource::Key, "w", Access::Write));
    assert!(a.allows(Resource::Key, "r", Access::Read));
    assert!(!a.allows(Resource::Key, "r", Access::Write));
    assert!(!a.allows(Resource::Key, "d", Access::Read));
    assert!(!a.allows(Resource::Key, "d", Access::Write));
}

#[test]
fn default_policy_decides_when_nothing_matches() {
    let rules = r#"service "api" { policy = "read" }"#;
    let deny = authz(rules, DefaultPolicy::Deny);
    let allow = authz(rules, DefaultPolicy::Allow);
    assert!(!deny.allows(Resource::Service, "web", Access::Read));
    assert!(!deny.allows(Resource::Operator, "", Access::Read));
    assert!(allow.allows(Resource::Service, "web", Access::Write));
    assert!(allow.allows(Resource::Operator, "", Access::Write));
    // A matching rule decides even under allow.
    assert!(!allow.allows(Resource::Service, "api", Access::Write));
}

#[test]
fn merged_policies_deny_wins_a_tie_and_write_beats_read() {
    let mut rules = parse_rules(
        r#"service "api" { policy = "write" }
service "web" { policy = "read" }"#,
    )
    .unwrap();
    rules.merge(
        &parse_rules(
            r#"service "api" { policy = "deny" }
service "web" { policy = "write" }"#,
        )
        .unwrap(),
    );
    let a = Authorizer::new(rules, DefaultPolicy::Allow);
    assert!(!a.allows(Resource::Service, "api", Access::Read));
    assert!(a.allows(Resource::Service, "web", Access::Write));
}

#[test]
fn management_allows_everything_even_under_deny() {
    let a = Authorizer::management();
    for r in [
        Resource::Service,
        Resource::Key,
        Resource::Node,
        Resource::Agent,
        Resource::Operator,
        Resource::Acl,
    ] {
        assert!(a.allows(r, "anything", Access::Write), "{r}");
    }
}

fn policy(id: &str, name: &str, rules: &str) -> AclCommand {
    AclCommand::SetPolicy(PolicyInput {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        rules: rules.into(),
    })
}

fn token(
    accessor: &str,
    secret: &str,
    policies: Vec<PolicyRef>,
    expires: Option<u64>,
) -> AclCommand {
    AclCommand::SetToken(TokenInput {
        accessor_id: accessor.into(),
        secret_hash: Some(hash_secret(secret)),
        description: String::new(),
        policies,
        expiration_time: expires.map(Timestamp),
    })
}

#[test]
fn bootstrap_works_once() {
    let mut acl = Acl::default();
    let boot = |a: &str, s: &str| AclCommand::Bootstrap {
        accessor_id: a.into(),
        secret_hash: hash_secret(s),
        initial: false,
    };
    let AclOutcome::Token(t) = acl.apply(1, T0, &boot("acc-1", "s1")) else {
        panic!()
    };
    assert!(t.is_management());
    assert_eq!(t.secret_hash, hash_secret("s1"));
    assert_ne!(t.secret_hash, "s1");
    assert_eq!(
        acl.apply(2, T0, &boot("acc-2", "s2")),
        AclOutcome::Refused(AclRefusal::AlreadyBootstrapped)
    );
    assert_eq!(acl.index(), 1);
    let resolved = acl.resolve(Some(&hash_secret("s1")), T0).unwrap();
    assert_eq!(resolved.accessor_id, "acc-1");
    assert!(acl.authorizer(&resolved, DefaultPolicy::Deny).allows(
        Resource::Acl,
        "",
        Access::Write
    ));
    assert_eq!(
        acl.resolve(Some(&hash_secret("s2")), T0),
        Err(TokenError::NotFound)
    );
}

#[test]
fn initial_management_token_is_idempotent() {
    let mut acl = Acl::default();
    let cmd = AclCommand::Bootstrap {
        accessor_id: "acc-1".into(),
        secret_hash: hash_secret("root"),
        initial: true,
    };
    assert!(matches!(acl.apply(1, T0, &cmd), AclOutcome::Token(_)));
    let again = AclCommand::Bootstrap {
        accessor_id: "acc-other".into(),
        secret_hash: hash_secret("root"),
        initial: true,
    };
    assert_eq!(acl.apply(2, T0, &again), AclOutcome::Unchanged);
    assert_eq!(acl.tokens().len(), 2, "the management token and anonymous");
    assert!(acl.bootstrapped());
}

#[test]
fn tokens_link_policies_by_id_or_name_and_names_are_unique() {
    let mut acl = Acl::default();
    acl.apply(
        1,
        T0,
        &policy("p1", "readers", r#"service_prefix "" { policy = "read" }"#),
    );
    assert_eq!(
        acl.apply(2, T0, &policy("p2", "readers", "")),
        AclOutcome::Refused(AclRefusal::DuplicateName("readers".into()))
    );
    assert!(matches!(
        acl.apply(
            2,
            T0,
            &policy("p2", "bad", r#"service "x" { policy = "nope" }"#)
        ),
        AclOutcome::Refused(AclRefusal::Rules(_))
    ));
    assert!(matches!(
        acl.apply(2, T0, &policy("p2", "has space", "")),
        AclOutcome::Refused(AclRefusal::BadName(_))
    ));
    acl.apply(
        3,
        T0,
        &policy("p2", "api-writer", r#"service "api" { policy = "write" }"#),
    );
    let out = acl.apply(
        4,
        T0,
        &token(
            "t1",
            "sec",
            vec![
                PolicyRef::Name("readers".into()),
                PolicyRef::Id("p2".into()),
            ],
            None,
        ),
    );
    let AclOutcome::Token(t) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        t.policies,
        vec![
            PolicyLink {
                id: "p1".into(),
                name: "readers".into()
            },
            PolicyLink {
                id: "p2".into(),
                name: "api-writer".into()
            }
        ]
    );
    assert_eq!(
        acl.apply(
            5,
            T0,
            &token("t2", "sec2", vec![PolicyRef::Name("nope".into())], None)
        ),
        AclOutcome::Refused(AclRefusal::NoSuchPolicy("name \"nope\"".into()))
    );
    let a = acl.authorizer(&t, DefaultPolicy::Deny);
    assert!(a.allows(Resource::Service, "web", Access::Read));
    assert!(!a.allows(Resource::Service, "web", Access::Write));
    assert!(a.allows(Resource::Service, "api", Access::Write));
    assert!(!a.allows(Resource::Key, "k", Access::Read));
}

#[test]
fn deleting_a_policy_detaches_it() {
    let mut acl = Acl::default();
    acl.apply(
        1,
        T0,
        &policy("p1", "w", r#"service "api" { policy = "write" }"#),
    );
    acl.apply(
        2,
        T0,
        &token("t1", "sec", vec![PolicyRef::Id("p1".into())], None),
    );
    assert_eq!(
        acl.apply(3, T0, &AclCommand::DeletePolicy { id: "p1".into() }),
        AclOutcome::Deleted
    );
    let t = acl.resolve(Some(&hash_secret("sec")), T0).unwrap();
    assert!(t.policies.is_empty());
    assert_eq!(t.modify_index, 3);
    assert!(!acl.authorizer(&t, DefaultPolicy::Deny).allows(
        Resource::Service,
        "api",
        Access::Write
    ));
    assert_eq!(
        acl.apply(
            4,
            T0,
            &AclCommand::DeletePolicy {
                id: MANAGEMENT_POLICY_ID.into()
            }
        ),
        AclOutcome::Refused(AclRefusal::Builtin("policy global-management".into()))
    );
}

#[test]
fn expired_tokens_stop_at_expiry_and_are_reaped() {
    let mut acl = Acl::default();
    let expiry = T0.0 + 60_000;
    acl.apply(1, T0, &token("t1", "short", vec![], Some(expiry)));
    acl.apply(2, T0, &token("t2", "long", vec![], None));
    assert!(acl
        .resolve(Some(&hash_secret("short")), Timestamp(expiry - 1))
        .is_ok());
    assert_eq!(
        acl.resolve(Some(&hash_secret("short")), Timestamp(expiry)),
        Err(TokenError::NotFound)
    );
    assert!(!acl.has_expired(Timestamp(expiry - 1)));
    assert!(acl.has_expired(Timestamp(expiry)));
    assert_eq!(
        acl.apply(3, Timestamp(expiry - 1), &AclCommand::Reap),
        AclOutcome::Unchanged
    );
    assert_eq!(
        acl.apply(4, Timestamp(expiry), &AclCommand::Reap),
        AclOutcome::Reaped(vec!["t1".into()])
    );
    assert!(acl.token("t1").is_none());
    assert!(acl.token("t2").is_some());
    assert_eq!(acl.index(), 4);
    // A token cannot be created already expired.
    assert_eq!(
        acl.apply(
            5,
            Timestamp(expiry),
            &token("t3", "x", vec![], Some(expiry))
        ),
        AclOutcome::Refused(AclRefusal::ExpirationPast)
    );
}

#[test]
fn updating_a_token_keeps_its_secret() {
    let mut acl = Acl::default();
    acl.apply(
        1,
        T0,
        &policy("p1", "w", r#"key_prefix "" { policy = "write" }"#),
    );
    acl.apply(2, T0, &token("t1", "sec", vec![], None));
    let update = AclCommand::SetToken(TokenInput {
        accessor_id: "t1".into(),
        secret_hash: None,
        description: "now a writer".into(),
        policies: vec![PolicyRef::Id("p1".into())],
        expiration_time: None,
    });
    let AclOutcome::Token(t) = acl.apply(3, T0, &update) else {
        panic!()
    };
    assert_eq!(t.secret_hash, hash_secret("sec"));
    assert_eq!((t.create_index, t.modify_index), (2, 3));
    let resolved = acl.resolve(Some(&hash_secret("sec")), T0).unwrap();
    assert_eq!(resolved.description, "now a writer");
    let missing = AclCommand::SetToken(TokenInput {
        accessor_id: "t9".into(),
        secret_hash: None,
        description: String::new(),
        policies: vec![],
        expiration_time: None,
    });
    assert_eq!(
        acl.apply(4, T0, &missing),
        AclOutcome::Refused(AclRefusal::NoSuchToken("t9".into()))
    );
    // Duplicate secret refused.
    assert_eq!(
        acl.apply(5, T0, &token("t2", "sec", vec![], None)),
        AclOutcome::Refused(AclRefusal::DuplicateToken)
    );
}

#[test]
fn the_anonymous_token_takes_policies() {
    let mut acl = Acl::default();
    let anon = acl.resolve(None, T0).unwrap();
    assert_eq!(anon.accessor_id, ANONYMOUS_ACCESSOR_ID);
    assert!(!acl.authorizer(&anon, DefaultPolicy::Deny).allows(
        Resource::Service,
        "web",
        Access::Read
    ));
    acl.apply(
        1,
        T0,
        &policy("p1", "r", r#"service_prefix "" { policy = "read" }"#),
    );
    let update = AclCommand::SetToken(TokenInput {
        accessor_id: ANONYMOUS_ACCESSOR_ID.into(),
        secret_hash: None,
        description: "Anonymous Token".into(),
        policies: vec![PolicyRef::Id("p1".into())],
        expiration_time: None,
    });
    assert!(matches!(acl.apply(2, T0, &update), AclOutcome::Token(_)));
    let anon = acl.resolve(None, T0).unwrap();
    assert!(acl.authorizer(&anon, DefaultPolicy::Deny).allows(
        Resource::Service,
        "web",
        Access::Read
    ));
    assert!(matches!(
        acl.apply(
            3,
            T0,
            &AclCommand::DeleteToken {
                accessor_id: ANONYMOUS_ACCESSOR_ID.into()
            }
        ),
        AclOutcome::Refused(AclRefusal::Builtin(_))
    ));
}

#[test]
fn registry_carries_acl_state_through_serialisation() {
    use crate::registry::{Command, Registry, Request, Response};
    let mut r = Registry::new();
    let (resp, events) = r.apply(
        1,
        &Request::new(
            T0.0,
            Command::Acl(AclCommand::Bootstrap {
                accessor_id: "a".into(),
                secret_hash: hash_secret("s"),
                initial: false,
            }),
        ),
    );
    assert!(matches!(resp, Response::Acl(AclOutcome::Token(_))));
    assert!(events.is_empty());
    assert_eq!(r.last_index(), 1);
    let text = serde_json::to_string(&r).unwrap();
    let back: Registry = serde_json::from_str(&text).unwrap();
    assert!(back.acl().bootstrapped());
    assert!(back.acl().resolve(Some(&hash_secret("s")), T0).is_ok());
    assert!(!text.contains("\"s\""));
}

#[test]
fn hash_is_sha256_hex() {
    assert_eq!(
        hash_secret("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
