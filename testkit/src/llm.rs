//! A scripted OpenAI-compatible chat-completions server: a real HTTP server on loopback that
//! answers each model's requests from a queue of scripted replies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Reply {
    /// A schema-valid verdict.
    Verdict {
        verdict: &'static str,
        severity: &'static str,
    },
    /// Arbitrary message content (e.g. malformed JSON).
    Content(String),
    /// Content cut off at the token limit (`finish_reason: length`).
    Truncated(String),
    /// An HTTP error status.
    Status(u16),
    /// 429 with a `Retry-After` header.
    RateLimited { retry_after_secs: u64 },
    /// Wait, then reply.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn safe() -> Self {
        Reply::Verdict {
            verdict: "SAFE",
            severity: "LOW",
        }
    }
    pub fn unsafe_() -> Self {
        Reply::Verdict {
            verdict: "UNSAFE",
            severity: "HIGH",
        }
    }
}

#[derive(Default)]
struct Script {
    queued: HashMap<String, VecDeque<Reply>>,
    fallback: HashMap<String, Reply>,
    requests: Vec<(String, Value)>,
    /// What `GET /v1/models` lists.
    listed: std::collections::BTreeSet<String>,
}

#[derive(Clone)]
pub struct ScriptedLlm {
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

impl ScriptedLlm {
    pub async fn start() -> anyhow::Result<Self> {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route("/v1/models", axum::routing::get(models))
            .with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base_url, script })
    }

    /// Replies for `model`, used in order; after them the model's fallback (default SAFE).
    pub fn script(&self, model: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .queued
            .entry(model.into())
            .or_default()
            .extend(replies);
    }

    pub fn fallback(&self, model: &str, reply: Reply) {
        self.script
            .lock()
            .unwrap()
            .fallback
            .insert(model.into(), reply);
    }

    /// Adds `model` to what `GET /v1/models` lists.
    pub fn list_model(&self, model: &str) {
        self.script.lock().unwrap().listed.insert(model.into());
    }

    /// Removes `model` from what `GET /v1/models` lists (it still answers chat requests).
    pub fn unlist_model(&self, model: &str) {
        self.script.lock().unwrap().listed.remove(model);
    }

    pub fn requests_for(&self, model: &str) -> Vec<Value> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, _)| m == model)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.script.lock().unwrap().requests.len()
    }

    pub async fn wait_for_requests(
        &self,
        model: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        while self.requests_for(model).len() < n {
            anyhow::ensure!(
                start.elapsed() < timeout,
                "model {model} got fewer than {n} requests in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

async fn models(State(script): State<Arc<Mutex<Script>>>) -> Json<Value> {
    let listed = script.lock().unwrap().listed.clone();
    Json(json!({
        "object": "list",
        "data": listed.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "scripted"})).collect::<Vec<_>>(),
    }))
}

async fn complete(State(script): State<Arc<Mutex<Script>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let reply = {
        let mut s = script.lock().unwrap();
        s.requests.push((model.clone(), body.clone()));
        let queued = s.queued.get_mut(&model).and_then(VecDeque::pop_front);
        queued
            .or_else(|| s.fallback.get(&model).cloned())
            .unwrap_or_else(Reply::safe)
    };
    respond(&model, reply).await
}

async fn respond(model: &str, reply: Reply) -> Response {
    let mut reply = reply;
    while let Reply::Delayed(delay, next) = reply {
        tokio::time::sleep(delay).await;
        reply = *next;
    }
    let (content, finish) = match reply {
        Reply::Verdict { verdict, severity } => (
            json!({
                "verdict": verdict, "severity": severity, "blocking": verdict == "UNSAFE",
                "findings": if verdict == "UNSAFE" { json!([{"title": "scripted finding", "severity": severity, "detail": "scripted"}]) } else { json!([]) },
                "rationale": format!("scripted {verdict} verdict"),
            })
            .to_string(),
            "stop",
        ),
        Reply::Content(content) => (content, "stop"),
        Reply::Truncated(content) => (content, "length"),
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(json!({"error": {"message": "scripted failure"}}))).into_response();
        }
        Reply::RateLimited { retry_after_secs } => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
                Json(json!({"error": {"message": "rate limited"}})),
            )
                .into_response();
        }
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    };
    Json(json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }))
    .into_response()
}
