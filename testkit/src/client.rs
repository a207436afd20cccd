//! Typed clients, one per plane: `app.dev(&session).post::<_, Value>("/drafts", &body, 201)`.
//! Each call states the status it expects and panics with the answer otherwise, so a test reads
//! as the requests a user makes and the answers they get.

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const PUBLIC: &str = "/api/v1/public";
pub const DEV: &str = "/api/v1/sigma/dev";
pub const OPERATOR: &str = "/api/v1/sigma/operator";

/// One plane of a running API, with the credential it is called with (none on the public plane).
#[derive(Clone)]
pub struct PlaneClient {
    http: reqwest::Client,
    /// The API's base URL and the plane's path prefix.
    root: String,
    token: Option<String>,
    /// Extra headers sent with every request (an `Idempotency-Key`, a cookie).
    headers: Vec<(String, String)>,
}

impl PlaneClient {
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        plane: &str,
        token: Option<&str>,
    ) -> Self {
        Self {
            http,
            root: format!("{base_url}{plane}"),
            token: token.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    /// The same plane with another credential.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same plane without a credential.
    pub fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    /// The same client sending `name: value` with every request, e.g. an `Idempotency-Key`.
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut client = self.clone();
        client.headers.push((name.to_owned(), value.to_owned()));
        client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    pub async fn get<Out: DeserializeOwned>(&self, path: &str, expected: u16) -> Out {
        self.expect(Method::GET, path, None::<&()>, expected).await
    }

    pub async fn post<In: Serialize + ?Sized, Out: DeserializeOwned>(
        &self,
        path: &str,
        body: &In,
        expected: u16,
    ) -> Out {
        self.expect(Method::POST, path, Some(body), expected).await
    }

    /// POST without a body.
    pub async fn post_empty<Out: DeserializeOwned>(&self, path: &str, expected: u16) -> Out {
        self.expect(Method::POST, path, None::<&()>, expected).await
    }

    pub async fn put<In: Serialize + ?Sized, Out: DeserializeOwned>(
        &self,
        path: &str,
        body: &In,
        expected: u16,
    ) -> Out {
        self.expect(Method::PUT, path, Some(body), expected).await
    }

    pub async fn patch<In: Serialize + ?Sized, Out: DeserializeOwned>(
        &self,
        path: &str,
        body: &In,
        expected: u16,
    ) -> Out {
        self.expect(Method::PATCH, path, Some(body), expected).await
    }

    pub async fn delete<Out: DeserializeOwned>(&self, path: &str, expected: u16) -> Out {
        self.expect(Method::DELETE, path, None::<&()>, expected)
            .await
    }

    /// Any request; the status and the JSON answer (`null` for an empty body, a string for a
    /// body that is not JSON). For tests that look at the status themselves.
    pub async fn call<In: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&In>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("API reachable");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    async fn expect<In: Serialize + ?Sized, Out: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&In>,
        expected: u16,
    ) -> Out {
        let shown = format!("{method} {path}");
        let (status, value) = self.call(method, path, body).await;
        assert_eq!(status, expected, "{shown} answered {status}: {value}");
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{shown}: unexpected answer shape ({e}): {value}"))
    }
}
