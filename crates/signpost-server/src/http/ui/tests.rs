//! The pages' rendering: escaping of everything that comes from users, sorting, searching,
//! links, and the seams the script relies on.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue};
use signpost_core::kv::KvEntry;
use signpost_core::model::{CheckSpec, Dur, Timestamp};
use signpost_core::registry::StatusCounts;
use signpost_core::{Instance, ServiceDefinition, Status};

use super::pages::{self, Chrome, Nav, ServiceRow, Sort};
use super::{cookie_token, Access};
use crate::service::Caller;

const CHROME: Chrome<'static> = Chrome {
    title: "t",
    nav: Nav::Services,
    assets: "v1",
    token_set: false,
};

fn instance(id: &str, status: Status) -> Instance {
    Instance {
        id: id.to_string(),
        service: "web".to_string(),
        address: "10.0.0.1".to_string(),
        port: 8080,
        tags: vec!["v1".to_string()],
        metadata: Default::default(),
        weight: 100,
        status,
        check: Some(std::sync::Arc::new(CheckSpec {
            ttl: Some(Dur(10_000)),
            ..CheckSpec::default()
        })),
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_000_000),
        create_index: 1,
        modify_index: 1,
        state: Default::default(),
        maintenance: None,
    }
}

fn row(name: &str, passing: usize, warning: usize, critical: usize, tags: &[&str]) -> ServiceRow {
    ServiceRow {
        name: name.to_string(),
        counts: StatusCounts {
            passing,
            warning,
            critical,
        },
        tags: tags.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>(),
        has_definition: false,
    }
}

#[test]
fn metadata_tags_and_ids_are_escaped_on_the_service_page() {
    let mut i = instance("a<b>", Status::Passing);
    i.metadata = [("<k>", "<script>alert(1)</script>")].into_iter().collect();
    i.tags = vec!["\"><img src=x onerror=alert(2)>".to_string()];
    let now = UNIX_EPOCH + Duration::from_millis(1_700_000_090_000);
    let html = pages::service_page(&CHROME, "web", 7, &[i], None, now).into_string();
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;k&gt;"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&quot;&gt;&lt;img"), "{html}");
    assert!(html.contains("data-id=\"a&lt;b&gt;\""), "{html}");
    // The other fields the page promises.
    assert!(html.contains("10.0.0.1:8080"), "{html}");
    assert!(html.contains("ttl 10s"), "{html}");
    assert!(html.contains("1m ago"), "{html}");
    assert!(html.contains("data-index=\"7\""), "{html}");
}

#[test]
fn definitions_and_kv_values_are_escaped() {
    let mut config = serde_json::Map::new();
    config.insert("x".into(), serde_json::json!("</pre><script>"));
    let def = ServiceDefinition {
        name: "web".into(),
        version: "<v>".into(),
        description: "<b>d</b>".into(),
        endpoints: vec![],
        dependencies: vec!["a b?".into()],
        config,
        create_index: 1,
        modify_index: 1,
    };
    let html = pages::service_page(&CHROME, "web", 1, &[], Some(&def), UNIX_EPOCH).into_string();
    assert!(
        html.contains("&lt;v&gt;") && html.contains("&lt;b&gt;d&lt;/b&gt;"),
        "{html}"
    );
    assert!(!html.contains("</pre><script>"), "{html}");
    assert!(html.contains("href=\"/ui/services/a%20b%3F\""), "{html}");

    let entry = KvEntry {
        key: "cfg/<x>?".into(),
        value: br#"{"a":"</textarea><script>"}"#.to_vec(),
        flags: 0,
        create_index: 3,
        modify_index: 5,
        lock_index: 0,
    };
    let html = pages::kv_key(&CHROME, &entry, true).into_string();
    assert!(!html.contains("</textarea><script>"), "{html}");
    assert!(html.contains("data-cas=\"5\""), "{html}");
    assert!(html.contains("href=\"/ui/kv/cfg/\""), "{html}");
    // Pretty-printed JSON beside the editor.
    assert!(html.contains("{\n  &quot;a&quot;"), "{html}");
}

#[test]
fn read_only_callers_get_no_editor() {
    let entry = KvEntry {
        key: "k".into(),
        value: b"v".to_vec(),
        flags: 0,
        create_index: 1,
        modify_index: 1,
        lock_index: 0,
    };
    let html = pages::kv_key(&CHROME, &entry, false).into_string();
    assert!(
        !html.contains("kv-save") && !html.contains("kv-delete"),
        "{html}"
    );
    assert!(html.contains("readonly"), "{html}");
    let html = pages::kv_folder(&CHROME, "a/", &["a/b".into()], false).into_string();
    assert!(!html.contains("kv-create"), "{html}");
    let html = pages::kv_folder(&CHROME, "a/", &["a/b".into()], true).into_string();
    assert!(html.contains("kv-create"), "{html}");
}

#[test]
fn binary_values_are_shown_as_base64() {
    let entry = KvEntry {
        key: "bin".into(),
        value: vec![0xff, 0x00, 0xfe],
        flags: 0,
        create_index: 1,
        modify_index: 1,
        lock_index: 0,
    };
    let html = pages::kv_key(&CHROME, &entry, true).into_string();
    assert!(html.contains("/wD+"), "{html}");
    assert!(!html.contains("kv-value"), "{html}");
}

#[test]
fn services_sort_problems_first_and_search_names_and_tags() {
    let mut rows = vec![
        row("alpha", 2, 0, 0, &["blue"]),
        row("beta", 1, 0, 1, &[]),
        row("gamma", 1, 1, 0, &["green"]),
    ];
    Sort::Status.apply(&mut rows);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["beta", "gamma", "alpha"]);
    Sort::Instances.apply(&mut rows);
    assert_eq!(rows[0].name, "alpha");
    Sort::parse("name").apply(&mut rows);
    assert_eq!(rows[0].name, "alpha");
    assert_eq!(Sort::parse("bogus"), Sort::Status);

    let html = pages::services_section(4, &rows, "GREEN", Sort::Name).into_string();
    assert!(html.contains("gamma") && !html.contains("alpha"), "{html}");
    assert!(html.contains("1 of 3 services"), "{html}");
    let html = pages::services_section(4, &rows, "", Sort::Name).into_string();
    // The critical service stands out.
    assert!(
        html.contains("class=\"has-critical\" data-service=\"beta\""),
        "{html}"
    );
    assert!(!html.contains("class=\"has-critical\" data-service=\"alpha\""));
}

#[test]
fn kv_folders_link_each_level() {
    let html = pages::kv_folder(
        &CHROME,
        "a/b c/",
        &["a/b c/d/".into(), "a/b c/e".into()],
        true,
    )
    .into_string();
    assert!(html.contains("href=\"/ui/kv/a/\""), "{html}");
    assert!(html.contains("href=\"/ui/kv/a/b%20c/\""), "{html}");
    assert!(html.contains("href=\"/ui/kv/a/b%20c/d/\">d/</a>"), "{html}");
    assert!(html.contains("class=\"key\""), "{html}");
}

#[test]
fn the_token_cookie_is_read_and_decoded() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("other=1; signpost_token=ab%2Bc%3D; x=y"),
    );
    assert_eq!(cookie_token(&headers).as_deref(), Some("ab+c="));
    assert!(cookie_token(&HeaderMap::new()).is_none());
    let access = Access::new(Caller::unrestricted(), &headers);
    assert!(access.token_set && access.can_write_kv("any/key"));
    let chrome = Chrome {
        token_set: true,
        ..CHROME
    };
    let html = pages::error_page(&chrome, 403, "<nope>").into_string();
    assert!(html.contains("Token: set") && html.contains("&lt;nope&gt;"));
}

#[test]
fn the_embedded_assets_stay_far_below_the_size_budget() {
    // The issue's budget is 150 KB compressed for the whole UI; uncompressed, the script and
    // stylesheet must already fit (a vendored framework would not).
    let total = super::UI_JS.len() + super::UI_CSS.len();
    assert!(total < 150 * 1024, "{total} bytes");
}
