//! The web UI in a real browser: headless Chromium driven over WebDriver (`chromedriver`, from
//! Debian's `chromium-driver`, which `scripts/test.sh` installs) against the real binary.
//!
//! Each test runs its steps under [`Browser::run`], which saves a screenshot to
//! `target/ui-screenshots/<test>.png` when a step fails, then fails the test.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::harness::{client, free_port, Agent, POLL};

/// How long the browser may take to show a change made through the API (the issue's bound).
const LIVE: Duration = Duration::from_secs(1);
/// WebDriver's codes for the Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
/// How long a page may take to load (debug build, busy machine).
const LOAD: Duration = Duration::from_secs(20);

/// `chromedriver` on a free loopback port (in a process group of its own, so the browsers it
/// starts go with it) and one WebDriver session with headless Chromium.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect(
                "chromedriver is not installed: scripts/test.sh installs chromium and \
                 chromium-driver (apt-get install chromium chromium-driver)",
            );
        let mut browser = Browser {
            driver,
            client: None,
        };
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        let deadline = Instant::now() + LOAD;
        loop {
            match http.get(format!("{url}/status")).send().await {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                other => panic!("chromedriver did not answer on {url}: {other:?}"),
            }
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800", "--no-proxy-server"],
            }),
        );
        let session = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session from chromedriver: {e}"));
        browser.client = Some(session);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs a test's steps; if they fail, saves a screenshot named after the test, ends the
    /// session and fails with the steps' message.
    async fn run<F>(mut self, name: &str, steps: F)
    where
        F: Future<Output = ()>,
    {
        let outcome = AssertUnwindSafe(steps).catch_unwind().await;
        let client = self.client.take().expect("a session");
        if outcome.is_err() {
            let dir = screenshot_dir();
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}.png"));
            match client.screenshot().await {
                Ok(png) => match std::fs::write(&path, png) {
                    Ok(()) => eprintln!("screenshot saved to {}", path.display()),
                    Err(e) => eprintln!("could not save {}: {e}", path.display()),
                },
                Err(e) => eprintln!("no screenshot: {e}"),
            }
        }
        let _ = client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's process group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("ui-screenshots"))
        .unwrap_or_else(|| PathBuf::from("ui-screenshots"))
}

/// Evaluates `expr` in the page (a JavaScript expression).
async fn js(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("evaluating {expr}: {e}"))
}

/// Polls `expr` until it is `true`, or fails with `what` after `within`; returns how long it
/// took.
async fn until(c: &Client, within: Duration, what: &str, expr: &str) -> Duration {
    let start = Instant::now();
    loop {
        if js(c, expr).await == Value::Bool(true) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the page did not show {what} within {within:?} ({expr})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Loads `url` and waits until its script has run (it follows the page from then on).
async fn open(c: &Client, url: &str) {
    c.goto(url)
        .await
        .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    until(
        c,
        LOAD,
        "the page loaded",
        "document.readyState === 'complete'",
    )
    .await;
    // A mark that a reload would wipe: every live change must keep it.
    js(c, "(window.__noReload = true)").await;
}

async fn not_reloaded(c: &Client) {
    assert_eq!(
        js(c, "window.__noReload === true").await,
        Value::Bool(true),
        "the page was reloaded"
    );
}

fn instance(id: &str, port: u16) -> Value {
    json!({"id": id, "address": "127.0.0.1", "port": port, "tags": ["v1"],
           "metadata": {"zone": "<b>a</b>"}, "check": {"ttl": "30s"}})
}

#[tokio::test]
async fn services_and_instances_follow_the_registry_live() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    let (code, body) = agent.register("web", &instance("web-1", 8080)).await;
    assert_eq!(code, 201, "{body}");
    let browser = Browser::start().await;
    let c = browser.client().clone();
    let http = client();
    browser
        .run("services_and_instances_follow_the_registry_live", async {
            // The services page lists what is registered.
            open(&c, &agent.url("/ui/")).await;
            until(
                &c,
                LOAD,
                "web",
                "!!document.querySelector('tr[data-service=\"web\"]')",
            )
            .await;

            // Registered through the API: it appears without a reload.
            let (code, body) = agent.register("api", &instance("api-1", 9000)).await;
            assert_eq!(code, 201, "{body}");
            let took = until(
                &c,
                LIVE,
                "the new service api",
                "!!document.querySelector('tr[data-service=\"api\"]')",
            )
            .await;
            eprintln!("api appeared on the services page after {took:?}");
            not_reloaded(&c).await;

            // Its TTL check failed: it turns critical and stands out.
            let failed = http
                .put(agent.url("/v1/agent/check/fail/service:api-1"))
                .send()
                .await
                .unwrap();
            assert_eq!(failed.status(), 200);
            until(
                &c,
                LIVE,
                "api as critical",
                "!!document.querySelector('tr.has-critical[data-service=\"api\"]')",
            )
            .await;
            not_reloaded(&c).await;

            // The service page: instances appear, turn critical and vanish live.
            open(&c, &agent.url("/ui/services/api")).await;
            until(
                &c,
                LOAD,
                "api-1",
                "document.querySelector('tr[data-id=\"api-1\"]')?.dataset.status === 'critical'",
            )
            .await;
            let (code, body) = agent.register("api", &instance("api-2", 9001)).await;
            assert_eq!(code, 201, "{body}");
            let took = until(
                &c,
                LIVE,
                "api-2",
                "document.querySelector('tr[data-id=\"api-2\"]')?.dataset.status === 'passing'",
            )
            .await;
            eprintln!("api-2 appeared on the service page after {took:?}");
            // Every field the row promises, escaped as text.
            let row = js(
                &c,
                "document.querySelector('tr[data-id=\"api-2\"]').innerText",
            )
            .await;
            let row = row.as_str().unwrap_or_default().to_string();
            for part in [
                "127.0.0.1:9001",
                "passing",
                "ttl 30s",
                "v1",
                "zone",
                "<b>a</b>",
                "ago",
            ] {
                assert!(row.contains(part), "{part:?} is not in the row: {row:?}");
            }
            let failed = http
                .put(agent.url("/v1/agent/check/fail/service:api-2"))
                .send()
                .await
                .unwrap();
            assert_eq!(failed.status(), 200);
            until(
                &c,
                LIVE,
                "api-2 as critical",
                "document.querySelector('tr[data-id=\"api-2\"]')?.dataset.status === 'critical'",
            )
            .await;
            assert_eq!(agent.deregister("api", "api-2").await, 204);
            until(
                &c,
                LIVE,
                "api-2 gone",
                "!document.querySelector('tr[data-id=\"api-2\"]')",
            )
            .await;
            not_reloaded(&c).await;

            // Back on the services page, a service whose last instance leaves vanishes.
            open(&c, &agent.url("/ui/")).await;
            assert_eq!(agent.deregister("api", "api-1").await, 204);
            until(
                &c,
                LIVE,
                "api gone",
                "!document.querySelector('tr[data-service=\"api\"]')",
            )
            .await;
            not_reloaded(&c).await;
        })
        .await;
}

#[tokio::test]
async fn kv_edits_save_with_cas_and_a_stale_edit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    let http = client();
    let put = |value: &'static str| {
        let req = http.put(agent.url("/api/v1/kv/cfg/app")).body(value);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    let raw = || {
        let req = http.get(agent.url("/api/v1/kv/cfg/app?raw"));
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    put(r#"{"replicas":1}"#).await;
    let browser = Browser::start().await;
    let c = browser.client().clone();
    browser
        .run("kv_edits_save_with_cas_and_a_stale_edit_is_refused", async {
            // The tree: the folder, then the key.
            open(&c, &agent.url("/ui/kv/")).await;
            c.find(Locator::LinkText("cfg/")).await.expect("the cfg/ folder").click().await.unwrap();
            until(&c, LOAD, "the folder", "location.pathname === '/ui/kv/cfg/'").await;
            c.find(Locator::LinkText("app")).await.expect("the app key").click().await.unwrap();
            until(&c, LOAD, "the key's page", "!!document.querySelector('#kv-value')").await;
            // JSON is shown pretty-printed.
            let pretty = js(&c, "document.querySelector('#kv-json').textContent").await;
            assert_eq!(pretty, json!("{\n  \"replicas\": 1\n}"));

            // An edit saves.
            let value = c.find(Locator::Id("kv-value")).await.unwrap();
            value.clear().await.unwrap();
            value.send_keys(r#"{"replicas":2}"#).await.unwrap();
            c.find(Locator::Id("kv-save")).await.unwrap().click().await.unwrap();
            until(&c, LOAD, "the save confirmed",
                "document.querySelector('#kv-message').textContent.startsWith('Saved at index')").await;
            assert_eq!(raw().await, r#"{"replicas":2}"#);

            // Someone else changes it; the page's next save is refused and says so.
            // (This time by keyboard: Tab to Save, which shows its focus, and Enter.)
            put(r#"{"replicas":5}"#).await;
            value.clear().await.unwrap();
            value.send_keys(r#"{"replicas":3}"#).await.unwrap();
            value.send_keys(TAB).await.unwrap();
            until(&c, LOAD, "Save focused", "document.activeElement.id === 'kv-save'").await;
            let outline = js(&c, "getComputedStyle(document.activeElement).outlineStyle").await;
            assert_ne!(outline, json!("none"), "the focused button shows no focus");
            c.active_element().await.unwrap().send_keys(ENTER).await.unwrap();
            until(&c, LOAD, "the refusal",
                "document.querySelector('#kv-message').textContent.startsWith('Not saved')").await;
            let message = js(&c, "document.querySelector('#kv-message').textContent").await;
            let message = message.as_str().unwrap_or_default();
            assert!(message.contains("cas index does not match"), "{message}");
            assert!(message.contains("changed this value since you opened it"), "{message}");
            assert_eq!(raw().await, r#"{"replicas":5}"#, "the stale edit was written");
        })
        .await;
}

#[tokio::test]
async fn pages_without_a_browser_redirects_errors_and_assets() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(agent.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/");
    let resp = http.get(agent.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "no such endpoint");

    let page = http.get(agent.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let start = html
        .find("/ui/assets/ui.js?v=")
        .expect("the page links the script");
    let link = &html[start..html[start..].find('"').map_or(html.len(), |e| start + e)];
    let js = http.get(agent.url(link)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let etag = js.headers()["etag"].clone();
    let again = http
        .get(agent.url("/ui/assets/ui.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = http
        .get(agent.url("/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Errors are shown as the API words them, with the API's status.
    for (page, api) in [
        (
            "/ui/services/bad_name!",
            "/api/v1/services/bad_name!/instances",
        ),
        ("/ui/kv/no/such/key", "/api/v1/kv/no/such/key"),
    ] {
        let api = http.get(agent.url(api)).send().await.unwrap();
        let status = api.status();
        let error: Value = api.json().await.unwrap();
        let worded = error["error"]
            .as_str()
            .expect("an error message")
            .to_string();
        let page = http.get(agent.url(page)).send().await.unwrap();
        assert_eq!(page.status(), status);
        let html = page.text().await.unwrap();
        let escaped = worded
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert!(
            html.contains(&escaped),
            "{worded:?} is not on the page: {html}"
        );
    }
}

/// With ACLs on: a page the tab has no token for asks for one; with a read-only token a key is
/// shown without the editor (no Save, no Delete, the value read-only); with a token that may
/// write it, the editor is there.
#[tokio::test]
async fn with_acls_the_ui_asks_for_a_token_and_a_read_only_token_sees_no_edit_buttons() {
    use crate::acl::{acl_agent, token, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let agent = acl_agent(dir.path()).await;
    let resp = client()
        .put(agent.url("/v1/kv/app/config"))
        .header("X-Consul-Token", ROOT)
        .body("replicas = 2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = token(
        &agent,
        "kv-reader",
        r#"key_prefix "app/" { policy = "read" }"#,
        json!({}),
    )
    .await;
    let browser = Browser::start().await;
    let c = browser.client().clone();
    let url = agent.url("/ui/kv/app/config");
    browser
        .run(
            "with_acls_the_ui_asks_for_a_token_and_a_read_only_token_sees_no_edit_buttons",
            async {
                // No token (anonymous, default deny): the page says why and asks for a token.
                open(&c, &url).await;
                until(
                    &c,
                    LOAD,
                    "the token form",
                    "!document.querySelector('#token-form').hidden \
                     && document.activeElement.id === 'token-input'",
                )
                .await;
                let refusal = js(&c, "document.querySelector('p.error').textContent").await;
                assert!(
                    refusal
                        .as_str()
                        .unwrap_or_default()
                        .contains("permission denied"),
                    "{refusal}"
                );

                // The read-only token, typed into the form: the value, and no way to change it.
                let input = c.find(Locator::Id("token-input")).await.unwrap();
                input.send_keys(&reader).await.unwrap();
                input.send_keys(ENTER).await.unwrap();
                until(
                    &c,
                    LOAD,
                    "the key's value",
                    "!!document.querySelector('#kv-value')",
                )
                .await;
                assert_eq!(
                    js(&c, "document.querySelector('#kv-value').value").await,
                    json!("replicas = 2")
                );
                assert_eq!(
                    js(
                        &c,
                        "[!!document.querySelector('#kv-save'), \
                            !!document.querySelector('#kv-delete'), \
                            document.querySelector('#kv-value').readOnly]"
                    )
                    .await,
                    json!([false, false, true]),
                    "a read-only token is offered edits"
                );

                // A management token: the editor is offered.
                c.find(Locator::Id("token-toggle"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
                let input = c.find(Locator::Id("token-input")).await.unwrap();
                input.clear().await.unwrap();
                input.send_keys(ROOT).await.unwrap();
                input.send_keys(ENTER).await.unwrap();
                until(
                    &c,
                    LOAD,
                    "the Save button",
                    "!!document.querySelector('#kv-save')",
                )
                .await;
                assert_eq!(
                    js(&c, "document.querySelector('#kv-value').readOnly").await,
                    json!(false)
                );
            },
        )
        .await;
}
