//! A client for any OpenAI-compatible chat-completions endpoint, with structured output in both
//! dialects: OpenAI's `json_schema` and llama.cpp's `json_object` + `schema`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatStyle {
    /// `{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}` (OpenAI, vLLM, OpenRouter).
    JsonSchema,
    /// `{"type": "json_object", "schema": …}` (llama.cpp server, which rejects the first form).
    JsonObjectSchema,
}

impl std::str::FromStr for ResponseFormatStyle {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "json_schema" => Ok(Self::JsonSchema),
            "json_object_schema" => Ok(Self::JsonObjectSchema),
            other => Err(format!("unknown response format `{other}`")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Clone, Copy)]
pub struct ChatRequest<'a> {
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
    pub model: &'a str,
    pub messages: &'a [Message],
    pub schema_name: &'a str,
    pub schema: &'a Value,
    pub style: ResponseFormatStyle,
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Send `seed` (most OpenAI-compatible servers honour it; some reject unknown fields).
    pub send_seed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatAnswer {
    pub content: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub raw: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Connection trouble, without the provider's URL (it is configuration, not for developers).
    #[error("provider unreachable: {0}")]
    Transport(String),
    #[error("provider did not answer in time")]
    Timeout,
    /// The body goes to the transcript and logs, not into the message: it can carry provider
    /// internals that developers reading a vote's failure should not see.
    #[error("provider answered HTTP {status}")]
    Status {
        status: u16,
        body: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("provider answer is not a chat completion: {0}")]
    Envelope(String),
}

impl LlmError {
    /// Worth retrying later: network trouble, rate limits and server errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Timeout => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Envelope(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn transport(e: reqwest::Error) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Transport(format!("{:#}", e.without_url()))
    }
}

/// The sampling seed sent to providers that take one.
pub const SEED: u64 = 42;

pub fn request_body(req: &ChatRequest<'_>) -> Value {
    let response_format = match req.style {
        ResponseFormatStyle::JsonSchema => json!({
            "type": "json_schema",
            "json_schema": {"name": req.schema_name, "strict": true, "schema": req.schema}
        }),
        ResponseFormatStyle::JsonObjectSchema => {
            json!({"type": "json_object", "schema": req.schema})
        }
    };
    let mut body = json!({
        "model": req.model,
        "messages": req.messages,
        // Reproducibility: greedy decoding, and a fixed seed where the provider honours one.
        "temperature": 0,
        "max_tokens": req.max_tokens,
        "response_format": response_format,
    });
    if req.send_seed {
        body["seed"] = json!(SEED);
    }
    body
}

pub async fn chat(http: &reqwest::Client, req: &ChatRequest<'_>) -> Result<ChatAnswer, LlmError> {
    let url = format!("{}/chat/completions", req.base_url.trim_end_matches('/'));
    let mut builder = http
        .post(&url)
        .timeout(req.timeout)
        .json(&request_body(req));
    if let Some(key) = req.api_key {
        builder = builder.bearer_auth(key);
    }
    let response = builder.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let text = response.text().await.map_err(transport)?;
    if !status.is_success() {
        return Err(LlmError::Status {
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
            retry_after,
        });
    }
    let raw: Value = serde_json::from_str(&text).map_err(|e| {
        LlmError::Envelope(format!(
            "{e}: {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    let choice = raw
        .pointer("/choices/0")
        .ok_or_else(|| LlmError::Envelope("no choices".into()))?;
    let content = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| LlmError::Envelope("no message content".into()))?
        .to_owned();
    Ok(ChatAnswer {
        content,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        prompt_tokens: raw.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
        completion_tokens: raw
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64),
        raw,
    })
}
