//! A browser as the predecessor's web client (React + axios, `withCredentials`) drives this
//! service: one cookie jar, cookies only (never an `Authorization` header), `X-CSRF-Token` read
//! from the `csrf_token` cookie on every unsafe request, an `Origin` header, and the refresh
//! interceptor: on a 401 one bodiless `POST /api/auth/refresh` (cookies + `X-CSRF-Token`), then
//! the request again.
//!
//! Bodies are sent as raw JSON text and answers kept as raw text, so a JSON number such as
//! `1.000000000000000001` travels with all its digits (a `serde_json::Value` would make it an
//! `f64`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// One answer: status, raw body text, and the body parsed (`Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
    pub json: Value,
}

#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    jar: Arc<Jar>,
    /// The service the page talks to (`apiBaseUrl`).
    pub base: String,
    /// The page's origin (sent as `Origin`).
    origin: String,
    refreshes: Arc<AtomicUsize>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Self {
            http,
            jar,
            base: base.to_owned(),
            origin: base.to_owned(),
            refreshes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same browser (cookie jar) talking to another instance of the service on this host:
    /// cookies are per host, not per port.
    pub fn at(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    /// How many times the refresh interceptor ran.
    pub fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// The value of cookie `name` as the page's script sees it (`document.cookie`).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let url: reqwest::Url = format!("{}/", self.base).parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }

    /// Signs `email` up and logs in, as the client's auth page does (asserting 201, 200 and a
    /// `csrf_token` cookie); the login's answer.
    pub async fn sign_up_and_log_in(&self, email: &str, name: &str) -> Answer {
        let password = super::helpers::PASSWORD;
        let signup = self
            .post(
                "/api/auth/signup",
                &format!(r#"{{"email":"{email}","password":"{password}","name":"{name}"}}"#),
            )
            .await;
        assert_eq!(signup.status, StatusCode::CREATED, "{signup:?}");
        let login = self
            .post(
                "/api/auth/login",
                &format!(r#"{{"email":"{email}","password":"{password}"}}"#),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        assert!(self.cookie("csrf_token").is_some(), "no csrf_token cookie");
        login
    }

    /// `GET path` until `done` holds for the answer (the projections are asynchronous; the old
    /// client simply polls), at most 15 s; every answer must be 200.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Answer) -> bool) -> Answer {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let answer = self.get(path).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
            if done(&answer) {
                return answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never got there: {answer:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    /// A POST with `body` as raw JSON text.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `method path` through the refresh interceptor.
    pub async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let first = self.send(method.clone(), path, body, &[]).await;
        let retried = first.status == StatusCode::UNAUTHORIZED
            && !path.starts_with("/api/auth/refresh")
            && !path.starts_with("/api/auth/login");
        if !retried {
            return first;
        }
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let refresh = self
            .send(Method::POST, "/api/auth/refresh", None, &[])
            .await;
        if refresh.status != StatusCode::OK {
            return first; // the client redirects to /auth
        }
        self.send(method, path, body, &[]).await
    }

    /// One request as the page sends it, without the interceptor, with extra `headers` (an
    /// `X-CSRF-Token` among them replaces the cookie's).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let unsafe_method = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Origin", &self.origin);
        let own_csrf = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("x-csrf-token"));
        if unsafe_method && !own_csrf {
            if let Some(csrf) = self.cookie("csrf_token") {
                request = request.header("X-CSRF-Token", csrf);
            }
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, text, json }
    }
}

/// The literal text of the JSON number at `pointer` (RFC 6901) in `text`: its exact digits.
pub fn number_text(text: &str, pointer: &str) -> String {
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    let literal = raw_at(text, &keys);
    assert!(
        literal.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
        "{pointer} is not a JSON number: {literal}"
    );
    literal
}

/// The raw JSON text of the value at `keys` (object keys or array indexes) in `text`.
fn raw_at(text: &str, keys: &[&str]) -> String {
    use serde_json::value::RawValue;
    let Some((key, rest)) = keys.split_first() else {
        return text.trim().to_owned();
    };
    let child = match key.parse::<usize>() {
        Ok(index) => serde_json::from_str::<Vec<Box<RawValue>>>(text)
            .unwrap()
            .into_iter()
            .nth(index)
            .unwrap_or_else(|| panic!("no [{index}] in {text}")),
        Err(_) => serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(text)
            .unwrap()
            .remove(*key)
            .unwrap_or_else(|| panic!("no {key} in {text}")),
    };
    raw_at(child.get(), rest)
}
