//! A small WebDriver client for Debian's `chromedriver` driving headless Chromium (both
//! installed by `scripts/setup`), for tests of the dashboard in a real browser.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Browser {
    /// Start chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        let port = free_port();
        // In a process group of its own, with the browsers it starts: a test that panics before
        // closing its session still ends them all when the `Browser` is dropped.
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "start chromedriver: run scripts/setup (it installs chromium and chromium-driver)",
            );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("browser profile folder");
        // The flags Chromium needs here: as root (no sandbox), headless, and no background
        // connections (the network is closed).
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({ "args": args });
        if let Ok(binary) = std::env::var("REFOLD_TEST_CHROMIUM") {
            options["binary"] = json!(binary);
        } else if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options } } });
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            client,
            _profile: profile,
        };
        let created = browser.command("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(&body),
        };
        let response: Value = request
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("WebDriver answer");
        response["value"].clone()
    }

    async fn session(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body).await
    }

    /// Load a page.
    pub async fn open(&self, url: &str) {
        let answer = self.session("POST", "/url", json!({ "url": url })).await;
        assert!(answer.is_null(), "loading {url}: {answer}");
    }

    /// Run a script in the page and return its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Click the element a CSS selector finds (retrying while the page re-renders it).
    pub async fn click(&self, selector: &str) {
        self.act(selector, "click", json!({})).await;
    }

    /// Press keys in the element a CSS selector finds (`\u{E007}` is Enter), as a keyboard user
    /// does once the element has focus (retrying while the page re-renders it).
    pub async fn keys(&self, selector: &str, text: &str) {
        self.act(selector, "value", json!({ "text": text })).await;
    }

    /// Find an element and send it one command (`click`, `value`), again while the page
    /// replaces the element between the two.
    async fn act(&self, selector: &str, command: &str, body: Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .session(
                    "POST",
                    "/element",
                    json!({ "using": "css selector", "value": selector }),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                let done = self
                    .session("POST", &format!("/element/{id}/{command}"), body.clone())
                    .await;
                if done.is_null() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cannot {command} {selector}: {found}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resize the window (CSS pixels), to see the page at a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        let answer = self
            .session(
                "POST",
                "/window/rect",
                json!({ "width": width, "height": height }),
            )
            .await;
        assert!(answer["width"].is_number(), "resizing the window: {answer}");
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.session("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("screenshot data"))
            .expect("screenshot is base64")
    }

    /// End the session (Chromium exits) and the driver.
    pub async fn close(mut self) {
        self.session("DELETE", "", Value::Null).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM lets chromedriver close the browsers it started; then reap it, and end
        // whatever of its group is left (browsers of a session never closed).
        let group = i32::try_from(self.driver.id()).ok();
        if let Some(pid) = group {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.driver.wait();
        if let Some(pid) = group {
            // SAFETY: kill(2) on the process group the driver led; its id is not reused while
            // a member of the group is alive.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
