//! A real `refold run` with its HTTP API on a free loopback port, and a client for it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use refold::store::Store;
use refold_tests::{Running, Sandbox, wait_progressing, wait_until};
use reqwest::StatusCode;
use serde_json::Value;

/// A host serving its API, killed when dropped.
pub struct Host {
    _running: Running,
    pub base: String,
    client: reqwest::Client,
}

/// The base URL (`http://127.0.0.1:PORT`) a host started with `--http 127.0.0.1:0` listens
/// on, read from its log: the system picks the port when the host binds it, so two tests never
/// race for one.
pub async fn listening(running: &mut Running, log: &Path) -> String {
    const SAYS: &str = "HTTP API on http://";
    let mut base = None;
    wait_until("the host to say where it listens", || {
        let alive = running.alive();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        base = text.find(SAYS).and_then(|at| {
            let rest = &text[at + SAYS.len()..];
            rest.find("/api")
                .map(|end| format!("http://{}", &rest[..end]))
        });
        assert!(
            alive || base.is_some(),
            "the host exited before listening: {text}"
        );
        std::future::ready(base.is_some())
    })
    .await;
    base.expect("address")
}

impl Host {
    /// `refold run` on a store and a projections folder, ready (folder deployed, store
    /// answering).
    pub async fn start(sandbox: &Sandbox, uri: &str, projections: &Path) -> Self {
        Self::start_with(sandbox, uri, projections, &[]).await
    }

    /// [`Host::start`] with extra arguments for `refold run` (failure policies, limits).
    pub async fn start_with(
        sandbox: &Sandbox,
        uri: &str,
        projections: &Path,
        extra: &[&str],
    ) -> Self {
        let dir = projections.to_string_lossy();
        let mut args = vec![
            "run",
            "--store",
            uri,
            "--projections",
            &dir,
            "--http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        static HOSTS: AtomicUsize = AtomicUsize::new(0);
        let log = sandbox.path(&format!(
            "host-{}.log",
            HOSTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut running = Running::logged(&args, &[("REFOLD_LOG", "info")], &log);
        let base = listening(&mut running, &log).await;
        Self::attach(running, base).await
    }

    /// Wait for a started host's API to be ready.
    pub async fn attach(mut running: Running, base: String) -> Self {
        let client = reqwest::Client::new();
        let ready = format!("{base}/readyz");
        wait_until("the HTTP API to be ready", || {
            let alive = running.alive();
            assert!(alive, "the host exited before its API was ready");
            let request = client.get(&ready).send();
            async move { matches!(request.await, Ok(r) if r.status() == StatusCode::OK) }
        })
        .await;
        Self {
            _running: running,
            base,
            client,
        }
    }

    /// The same host, its requests sent with `Authorization: Bearer TOKEN`.
    pub fn with_token(mut self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a token fits in a header");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        self.client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("HTTP client");
        self
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GET a path (with its query string).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET a path with query parameters, encoded.
    pub async fn get_with(&self, path: &str, query: &[(&str, String)]) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// POST raw bytes as JSON.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// [`Self::post_raw`], but a request the server cut off while its body was still being
    /// sent (it may answer a body over the limit and close the connection before reading it
    /// all) comes back as `Err` instead of failing the test.
    pub async fn try_post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        // On a connection of its own: a server that cuts the request off closes the
        // connection, which the next request would otherwise find in the pool and fail on
        // (`IncompleteMessage`).
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Any method, no body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        self.send(self.client.request(method, format!("{}{path}", self.base)))
            .await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        body.as_str().expect("metrics are text").to_owned()
    }

    /// Wait until a projection's status satisfies `condition`, for as long as its checkpoint
    /// or state keeps moving.
    pub async fn wait_for_projection(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) {
        let path = format!("/api/projections/{name}");
        wait_progressing(what, || async {
            let (status, body) = self.get(&path).await;
            if status == StatusCode::OK && condition(&body) {
                Ok(())
            } else {
                Err((status, progress(&body)))
            }
        })
        .await;
    }

    /// Wait until every projection is live at the store's head, for as long as their
    /// checkpoints or states keep moving.
    pub async fn wait_live(&self, store: &dyn Store) {
        let head = store.head().await.expect("head");
        wait_progressing("every projection to be live at the head", || async {
            let (_, body) = self.get("/api/projections").await;
            let projections = body["projections"].as_array().cloned().unwrap_or_default();
            let live = !projections.is_empty()
                && projections
                    .iter()
                    .all(|p| p["state"] == "live" && p["checkpoint"].as_u64() >= Some(head));
            if live {
                Ok(())
            } else {
                Err(projections.iter().map(progress).collect::<Vec<_>>())
            }
        })
        .await;
    }
}

/// What says a projection is moving: its name, state, checkpoint and generations' checkpoints.
fn progress(projection: &Value) -> String {
    let generations: Vec<&Value> = projection["generations"]
        .as_array()
        .map(|g| g.iter().map(|g| &g["checkpoint"]).collect())
        .unwrap_or_default();
    format!(
        "{} {} {} {generations:?}",
        projection["name"], projection["state"], projection["checkpoint"]
    )
}

/// A series' name and labels (`name{a="x",b="y"}`), the labels sorted; values must not hold
/// `,` or `"`.
fn series(text: &str) -> (&str, Vec<&str>) {
    match text.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
            labels.sort_unstable();
            (name, labels)
        }
        None => (text, Vec::new()),
    }
}

/// The value of the first metric line of this name that has these labels, and maybe others (as
/// a Prometheus selector matches: the `host` label, for one).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    let (name, wanted) = series(name_and_labels);
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (line_series, value) = line.rsplit_once(' ')?;
            let (line_name, labels) = series(line_series);
            (line_name == name && wanted.iter().all(|l| labels.contains(l))).then_some(value)
        })
        .and_then(|v| v.trim().parse().ok())
}
