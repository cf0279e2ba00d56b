//! The operators' page in a real headless Chromium, driven over WebDriver (chromedriver, started
//! here on a free loopback port and killed at the end with the browser it started). Needs
//! Debian's `chromium` and `chromium-driver`; `scripts/test.sh` installs them when missing.
//!
//! Set `KUOTA_ADMIN_SCREENSHOT=<file.png>` to also run a short surge and save a screenshot of
//! the page during it (how `docs/img/admin-surge.png` is made).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::support::{ADMIN_TOKEN, Backend, TestApp, race, registration, spawn_app_with};

/// How long chromedriver may take to listen, and Chromium to start a session.
const BROWSER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the page may take to show what a step expects (it polls every second or so).
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait looks at the page again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The browser window: wide enough for the page's charts side by side.
const WINDOW_WIDTH_PX: u32 = 1280;
const WINDOW_HEIGHT_PX: u32 = 2000;
/// The surge of the screenshot: its length and its concurrent clients.
const SURGE_DURATION: Duration = Duration::from_secs(20);
const SURGE_CLIENTS: usize = 8;

const MISSING_BROWSER: &str = "the browser tests need Chromium and chromedriver (Debian: \
    `apt-get install chromium chromium-driver`; scripts/test.sh installs them when missing)";

/// The first of `names` found on `PATH` or in the usual binary folders.
fn find_program(names: &[&str]) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let folders = std::env::split_paths(&path).chain(["/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    let folders: Vec<PathBuf> = folders.collect();
    names
        .iter()
        .flat_map(|name| folders.iter().map(move |folder| folder.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("none of {names:?} was found: {MISSING_BROWSER}"))
}

/// chromedriver with its Chromium, in a process group of their own so that both end with it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|e| panic!("{e}"));
        let chromedriver = find_program(&["chromedriver"]).unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("{} does not start ({error}): {MISSING_BROWSER}", chromedriver.display())
                })
        };
        let profile =
            std::env::temp_dir().join(format!("kuota_t_chromium_{}", kuota_persist::random::token_hex(6)));
        let mut browser = Browser { driver, client: None, profile };
        browser.wait_for_driver(port).await;
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Containers run the tests as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--user-data-dir={}", browser.profile.display()),
                    format!("--window-size={WINDOW_WIDTH_PX},{WINDOW_HEIGHT_PX}"),
                ],
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let address = format!("http://127.0.0.1:{port}");
        let connect = builder.connect(&address);
        let client = tokio::time::timeout(BROWSER_START_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| panic!("Chromium did not start a session within {BROWSER_START_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("Chromium did not start a session ({error}): {MISSING_BROWSER}"));
        browser.client = Some(client);
        browser
    }

    async fn wait_for_driver(&mut self, port: u16) {
        let deadline = Instant::now() + BROWSER_START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at startup ({status}): {MISSING_BROWSER}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within {BROWSER_START_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session started")
    }

    /// Ends the session (Chromium quits), then the driver.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(BROWSER_START_TIMEOUT, client.close()).await;
        }
    }

    /// The visible text of the element `css` (empty when hidden or absent).
    async fn text(&self, css: &str) -> String {
        match self.client().find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the visible text of `css` satisfies `expected`; fails with what it last was.
    async fn wait_for_text(&self, css: &str, what: &str, expected: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let text = self.text(css).await;
            if expected(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}: `{css}` still shows {text:?} after {PAGE_TIMEOUT:?}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field =
            self.client().find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("{css} is on the page"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        let element =
            self.client().find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("{css} is on the page"));
        element.click().await.unwrap();
    }
}

impl Drop for Browser {
    /// Kills chromedriver's process group: the driver and any Chromium it left behind.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn number(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or(0)
}

/// Registers `count` people for `event` at once, each with a key and e-mail of its own.
async fn burst(app: &TestApp, event: &str, prefix: &str, count: usize) {
    let registrations = (0..count).map(|n| {
        let port = app.port;
        let (event, key) = (event.to_string(), format!("{prefix}-{n}"));
        tokio::spawn(async move {
            let app = TestApp::attach(port);
            app.register(&event, &key, &registration("10K", &format!("{key}@example.org"))).await.status
        })
    });
    for registration in registrations.collect::<Vec<_>>() {
        registration.await.unwrap();
    }
}

#[actix_rt::test]
async fn an_organizer_logs_in_follows_seats_live_creates_an_event_and_sees_refusals_rise() {
    // One registration per e-mail a minute: a surge's retries show 429s beside the sold-out
    // answers.
    let app = spawn_app_with(Backend::MariaDb, |settings| settings.rate_limit_email_per_minute = 1).await;
    // Chromium takes a core for seconds: it takes its turn with the fault tests, which measure
    // latencies and would measure it.
    let _turn = super::faults::one_fault_at_a_time().await;
    app.create_event(race("opening", 5, 0)).await;
    let browser = Browser::start().await;
    let base = format!("http://127.0.0.1:{}", app.port);

    // Log in: a wrong token is refused, the admin token opens the page.
    browser.client().goto(&format!("{base}/admin")).await.unwrap();
    browser.wait_for_text("#login-title", "the login form", |text| text == "Log in").await;
    browser.fill("#token", "not-the-token").await;
    browser.click("#login-form button").await;
    browser.wait_for_text("#login-error", "a wrong token", |text| text.contains("not the admin token")).await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("#login-form button").await;
    browser.wait_for_text("#node-name", "the node's figures", |text| text == "Node test").await;

    // Follow the event: registrations made through the API show up live.
    let follow = "#events tr[data-event=\"opening\"] button";
    browser.wait_for_text(follow, "the event list", |text| text == "Follow live").await;
    browser.click(follow).await;
    let available = "#live-categories tr[data-category=\"10K\"] .available";
    browser.wait_for_text(available, "the live figures", |text| text == "5").await;
    for n in 0..2 {
        let response = app
            .register("opening", &format!("live-{n}"), &registration("10K", &format!("live{n}@example.org")))
            .await;
        assert_eq!(response.status, 201);
    }
    browser.wait_for_text(available, "seats taken through the API", |text| text == "3").await;

    // Create an event from the form; the page follows it, and its capacity changes from there.
    browser.fill("#new-id", "from-the-page").await;
    browser.fill("#new-name", "Made in the browser").await;
    browser.fill("#new-categories", "10K, 10 km, 40").await;
    browser.click("#create-form button").await;
    browser.wait_for_text("#create-result", "the creation", |text| text == "Created from-the-page.").await;
    browser.wait_for_text(available, "the new event's figures", |text| text == "40").await;
    let created = app.get("/v1/events/from-the-page", &[]).await;
    assert_eq!((created.status, created.json()["name"].as_str()), (200, Some("Made in the browser")));
    let capacity = "#live-categories tr[data-category=\"10K\"] input";
    browser.fill(capacity, "45").await;
    browser.click("#live-categories tr[data-category=\"10K\"] button").await;
    browser
        .wait_for_text("#capacity-result", "the capacity change", |text| text.contains("capacity set to 45"))
        .await;
    browser.wait_for_text(available, "the raised capacity", |text| text == "45").await;
    let changed = app.get("/v1/events/from-the-page", &[]).await.json();
    assert_eq!(changed["categories"][0]["capacity"], 45);

    // A small burst at the first event: 3 seats left for 20 people, so at least 17 refusals.
    let refused = "#refused-sold-out-total";
    let before = number(
        &browser.wait_for_text(refused, "the refusal count", |text| !text.is_empty() && text != "–").await,
    );
    burst(&app, "opening", "burst", 20).await;
    browser.wait_for_text(refused, "the refusals of the burst", |text| number(text) >= before + 17).await;

    if let Some(path) = std::env::var_os("KUOTA_ADMIN_SCREENSHOT") {
        surge_and_screenshot(&app, &browser, &PathBuf::from(path)).await;
    }

    // Log out: the login form is back, and the session is gone for a reload too.
    browser.click("#logout").await;
    browser.wait_for_text("#login-error", "the logout", |text| text == "Logged out.").await;
    browser.client().goto(&format!("{base}/admin")).await.unwrap();
    browser.wait_for_text("#login-title", "the login form after a reload", |text| text == "Log in").await;
    assert_eq!(browser.text("#node-name").await, "");
    browser.close().await;
}

/// Runs `SURGE_DURATION` of registrations against a fresh event while the page follows it,
/// then saves a screenshot of the page to `path`.
async fn surge_and_screenshot(app: &TestApp, browser: &Browser, path: &std::path::Path) {
    app.create_event(json!({
        "id": "city-marathon",
        "name": "City Marathon",
        "categories": [
            { "code": "10K", "name": "10 km", "capacity": 5_000 },
            { "code": "42K", "name": "Marathon", "capacity": 2_000 }
        ]
    }))
    .await;
    let follow = "#events tr[data-event=\"city-marathon\"] button";
    browser.wait_for_text(follow, "the surge's event in the list", |text| text == "Follow live").await;
    browser.click(follow).await;
    let started = Instant::now();
    let clients = (0..SURGE_CLIENTS).map(|client| {
        let port = app.port;
        tokio::spawn(async move {
            let app = TestApp::attach(port);
            let mut n = 0;
            while started.elapsed() < SURGE_DURATION {
                // Every tenth request is a retry under a new key: the e-mail limit answers 429.
                let person = if n % 10 == 9 { n - 1 } else { n };
                let category = if n % 3 == 0 { "42K" } else { "10K" };
                let body = json!({ "category": category, "email": format!("c{client}-{person}@example.org"), "full_name": "Ana Runner" });
                app.register("city-marathon", &format!("surge-{client}-{n}"), &body).await;
                n += 1;
            }
        })
    });
    let clients: Vec<_> = clients.collect();
    // Taken while the surge still runs, so that the page shows it under way.
    tokio::time::sleep(SURGE_DURATION * 3 / 4).await;
    let png = browser.client().screenshot().await.expect("a screenshot");
    std::fs::write(path, png).unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    for client in clients {
        client.await.unwrap();
    }
}

#[test]
fn a_missing_browser_is_named_with_how_to_install_it() {
    let error = find_program(&["kuota-no-such-browser"]).unwrap_err();
    assert!(error.contains("apt-get install chromium chromium-driver"), "{error}");
}
