//! Who may use the API, checked before any route runs. A web page the operator happens to visit
//! must not be able to drive a local host, and a host on the network must not serve anyone:
//!
//! - **Host**: a request whose `Host` names neither an IP address, `localhost`, nor a configured
//!   name is refused (`421`). A DNS-rebinding page reaches the host under the attacker's domain
//!   name, so it is refused here even for reads.
//! - **Origin**: a mutating request (any method but `GET` and `HEAD`) that a browser marks as
//!   coming from another site (an `Origin` whose host and port are not the request's `Host`, or
//!   `Sec-Fetch-Site: cross-site`) is refused (`403`).
//! - **JSON only**: a mutating request that carries a body must say
//!   `Content-Type: application/json` (`415` otherwise). A cross-site page can only send JSON
//!   after a CORS preflight, which this API never approves.
//! - **Token**: when one is configured, every route but the console page, `/healthz`,
//!   `/readyz` and `/openapi.json` needs `Authorization: Bearer TOKEN` (`401`). `refold run`
//!   refuses to listen on a non-loopback address without one.
//! - **No framing**: every answer forbids being shown in another site's frame, so a page cannot
//!   trick the operator into clicking the console's buttons (whose requests are same-origin).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Shortest token accepted: a guessable token protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

/// Routes served without the token: the console page itself (it holds no data and asks for
/// the token), liveness and readiness probes, and the API's description.
const PUBLIC: [&str; 4] = ["/", "/healthz", "/readyz", "/openapi.json"];

/// Why an access setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The token is too short or has characters a header cannot carry.
    #[error(
        "the API token must have at least {MIN_TOKEN_LEN} characters, all printable ASCII without spaces"
    )]
    BadToken,
    /// A host name that cannot appear in a `Host` header.
    #[error("`{0}` is not a host name (give names like `refold.internal`, without a port)")]
    BadHost(String),
}

/// Access settings of one API.
#[derive(Debug, Clone, Default)]
pub struct Access {
    token: Option<String>,
    hosts: Vec<String>,
}

impl Access {
    /// Settings with this token (`None`: no token; only safe on loopback) and these host names
    /// accepted in `Host` besides IP addresses and `localhost`.
    pub fn new(token: Option<String>, hosts: &[String]) -> Result<Self, AccessError> {
        if let Some(token) = &token
            && (token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(AccessError::BadToken);
        }
        let hosts = hosts
            .iter()
            .map(|h| {
                let name = h.trim().to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if valid {
                    Ok(name)
                } else {
                    Err(AccessError::BadHost(h.clone()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { token, hosts })
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.hosts.contains(&name)
    }

    fn token_matches(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // The scheme's name is case-insensitive (RFC 9110).
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    /// Refuse the request, or `None` to let it through.
    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiError> {
        // Every HTTP/1.1 request names its host, and browsers always do: one without a readable
        // `Host` is refused rather than let through unchecked.
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return Some(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "the request has no readable Host header",
            ));
        };
        if !self.host_allowed(host) {
            return Some(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "this host does not answer to `{host}`: use its IP address or localhost, or start it with --api-host {}",
                    host_name(host)
                ),
            ));
        }
        let host = Some(host);
        let mutating = !matches!(*method, Method::GET | Method::HEAD);
        // A trace replays history on this host's cores: no other site's page may start one.
        let costly = path.ends_with("/trace");
        if (mutating || costly)
            && let Some(reason) = cross_site(headers, host)
        {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "{reason}: a web page of another site cannot change this host or start a trace on it"
                ),
            ));
        }
        if mutating && has_body(headers) && !is_json(headers) {
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the request body as JSON, with Content-Type: application/json",
            ));
        }
        let public = matches!(*method, Method::GET | Method::HEAD) && PUBLIC.contains(&path);
        if !public && !self.token_matches(headers) {
            return Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this host requires its API token: send Authorization: Bearer TOKEN",
            ));
        }
        None
    }
}

/// The middleware: refuses what [`Access`] does not allow.
pub(crate) async fn guard(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match access.check(request.method(), request.uri().path(), request.headers())
    {
        None => next.run(request).await,
        Some(error) => {
            let unauthorized = error.status() == StatusCode::UNAUTHORIZED;
            let mut response = error.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"refold\""),
                );
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// The host part of a `Host` header: without the port, and without the brackets of an IPv6
/// address.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Why a browser request comes from another site, if it does.
fn cross_site(headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Some("the request comes from another site (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null");
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    let same = match (authority, host) {
        (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    };
    (!same).then(|| {
        format!(
            "Origin `{origin}` is not this host (`{}`)",
            host.unwrap_or("")
        )
    })
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Compare without leaking, through timing, how long a prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn code(
        access: &Access,
        method: Method,
        path: &str,
        pairs: &[(&'static str, &'static str)],
    ) -> Option<String> {
        access
            .check(&method, path, &headers(pairs))
            .map(|e| e.code().to_owned())
    }

    #[test]
    fn names_that_are_not_an_address_localhost_or_configured_are_refused() {
        let access = Access::new(None, &["refold.internal".into()]).expect("access");
        for host in [
            "127.0.0.1:7070",
            "localhost:7070",
            "[::1]:7070",
            "10.0.0.5",
            "Refold.Internal:80",
        ] {
            let host: &'static str = Box::leak(host.to_owned().into_boxed_str());
            assert_eq!(
                code(&access, Method::GET, "/api/events", &[("host", host)]),
                None,
                "{host}"
            );
        }
        assert_eq!(
            code(
                &access,
                Method::GET,
                "/api/events",
                &[("host", "attacker.example:7070")]
            )
            .as_deref(),
            Some("host_not_allowed")
        );
    }

    #[test]
    fn a_trace_is_not_started_by_another_site_although_it_is_a_get() {
        let access = Access::default();
        let host = ("host", "127.0.0.1:7070");
        let trace = "/api/projections/p/collections/c/documents/d/trace";
        let cross = ("sec-fetch-site", "cross-site");
        assert_eq!(
            code(&access, Method::GET, trace, &[host, cross]).as_deref(),
            Some("origin_not_allowed")
        );
        assert_eq!(
            code(
                &access,
                Method::GET,
                trace,
                &[host, ("origin", "https://evil.example")]
            )
            .as_deref(),
            Some("origin_not_allowed")
        );
        assert_eq!(code(&access, Method::GET, trace, &[host]), None);
        let document = "/api/projections/p/collections/c/documents/d";
        assert_eq!(code(&access, Method::GET, document, &[host, cross]), None);
    }

    #[test]
    fn cross_site_mutations_and_non_json_bodies_are_refused() {
        let access = Access::default();
        let host = ("host", "127.0.0.1:7070");
        assert_eq!(
            code(
                &access,
                Method::POST,
                "/api/projections/p/pause",
                &[host, ("origin", "https://evil.example")]
            )
            .as_deref(),
            Some("origin_not_allowed")
        );
        assert_eq!(
            code(
                &access,
                Method::POST,
                "/api/projections/p/pause",
                &[host, ("origin", "http://127.0.0.1:7070")]
            ),
            None
        );
        assert_eq!(
            code(
                &access,
                Method::POST,
                "/api/streams/a",
                &[
                    host,
                    ("content-length", "2"),
                    ("content-type", "text/plain")
                ]
            )
            .as_deref(),
            Some("unsupported_media_type")
        );
        assert_eq!(
            code(
                &access,
                Method::POST,
                "/api/streams/a",
                &[
                    host,
                    ("content-length", "2"),
                    ("content-type", "application/json; charset=utf-8")
                ]
            ),
            None
        );
        // Reads from another site are not refused by origin: the Host check covers rebinding.
        assert_eq!(
            code(
                &access,
                Method::GET,
                "/api/events",
                &[host, ("origin", "https://evil.example")]
            ),
            None
        );
    }

    #[test]
    fn a_configured_token_is_required_except_on_public_pages() {
        let access = Access::new(Some("s3cret-token-0123456789".into()), &[]).expect("access");
        let host = ("host", "127.0.0.1:7070");
        assert_eq!(
            code(&access, Method::GET, "/api/events", &[host]).as_deref(),
            Some("unauthorized")
        );
        assert_eq!(
            code(
                &access,
                Method::GET,
                "/api/events",
                &[host, ("authorization", "Bearer wrong-token-0123456789")]
            )
            .as_deref(),
            Some("unauthorized")
        );
        assert_eq!(
            code(
                &access,
                Method::GET,
                "/api/events",
                &[host, ("authorization", "Bearer s3cret-token-0123456789")]
            ),
            None
        );
        for public in PUBLIC {
            assert_eq!(
                code(&access, Method::GET, public, &[host]),
                None,
                "{public}"
            );
        }
        assert_eq!(
            code(&access, Method::POST, "/healthz", &[host]).as_deref(),
            Some("unauthorized")
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_a_request_without_host_is_refused() {
        let access = Access::new(Some("s3cret-token-0123456789".into()), &[]).expect("access");
        let host = ("host", "127.0.0.1:7070");
        assert_eq!(
            code(
                &access,
                Method::GET,
                "/api/events",
                &[host, ("authorization", "bearer s3cret-token-0123456789")]
            ),
            None
        );
        assert_eq!(
            code(&access, Method::GET, "/healthz", &[]).as_deref(),
            Some("host_not_allowed")
        );
    }

    #[test]
    fn weak_tokens_and_bad_host_names_are_refused_by_name() {
        assert_eq!(
            Access::new(Some("short".into()), &[]).err(),
            Some(AccessError::BadToken)
        );
        assert_eq!(
            Access::new(Some("has a space in it 0123".into()), &[]).err(),
            Some(AccessError::BadToken)
        );
        assert!(matches!(
            Access::new(None, &["host:80".into()]),
            Err(AccessError::BadHost(_))
        ));
    }
}
