//! A small client of Retell's management API (LLMs, agents, phone numbers): bearer auth,
//! bounded timeouts, typed errors. Bodies are JSON values built by [`super::spec`]; answers
//! come back as JSON so the provisioner can compare what Retell holds with what it wants.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Retell answers in well under a second; a slow API must not hang the CLI.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An error body is quoted in the error up to this many characters.
const MAX_ERROR_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum RetellError {
    #[error("retell base url {url:?} is unusable: {problem}")]
    BaseUrl { url: String, problem: String },
    #[error(
        "retell refused the api key ({status}); set the company's key with \
         `askpro secret set --company ID --provider retell-api --value KEY`"
    )]
    Unauthorized { status: u16 },
    #[error("retell has no {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error("retell answered {status} to {operation}: {message}")]
    Refused {
        operation: &'static str,
        status: u16,
        message: String,
    },
    #[error("retell request {operation} failed: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("retell answer to {operation} is unreadable: {problem}")]
    Decode {
        operation: &'static str,
        problem: String,
    },
}

pub type RetellResult<T> = Result<T, RetellError>;

/// One company's view of the API (its key).
#[derive(Clone)]
pub struct RetellClient {
    http: reqwest::Client,
    base: Url,
    api_key: String,
}

impl std::fmt::Debug for RetellClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetellClient")
            .field("base", &self.base.as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl RetellClient {
    pub fn new(base_url: &str, api_key: &str) -> RetellResult<Self> {
        let base_error = |problem: String| RetellError::BaseUrl {
            url: base_url.to_owned(),
            problem,
        };
        crate::config::check_base_url(base_url).map_err(base_error)?;
        let base = Url::parse(base_url).map_err(|e| base_error(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| base_error(format!("http client: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key: api_key.to_owned(),
        })
    }

    pub async fn create_llm(&self, body: &Value) -> RetellResult<Value> {
        self.call(
            "create-retell-llm",
            Method::POST,
            &["create-retell-llm"],
            Some(body),
        )
        .await
    }

    pub async fn update_llm(&self, id: &str, body: &Value) -> RetellResult<Value> {
        self.call(
            "update-retell-llm",
            Method::PATCH,
            &["update-retell-llm", id],
            Some(body),
        )
        .await
    }

    pub async fn get_llm(&self, id: &str) -> RetellResult<Option<Value>> {
        found(
            self.call("get-retell-llm", Method::GET, &["get-retell-llm", id], None)
                .await,
        )
    }

    pub async fn list_llms(&self) -> RetellResult<Vec<Value>> {
        list(
            self.call("list-retell-llms", Method::GET, &["list-retell-llms"], None)
                .await?,
        )
    }

    /// Whether it existed.
    pub async fn delete_llm(&self, id: &str) -> RetellResult<bool> {
        let path = ["delete-retell-llm", id];
        let answer = self.call("delete-retell-llm", Method::DELETE, &path, None);
        Ok(found(answer.await)?.is_some())
    }

    pub async fn create_agent(&self, body: &Value) -> RetellResult<Value> {
        self.call("create-agent", Method::POST, &["create-agent"], Some(body))
            .await
    }

    pub async fn update_agent(&self, id: &str, body: &Value) -> RetellResult<Value> {
        self.call(
            "update-agent",
            Method::PATCH,
            &["update-agent", id],
            Some(body),
        )
        .await
    }

    pub async fn get_agent(&self, id: &str) -> RetellResult<Option<Value>> {
        found(
            self.call("get-agent", Method::GET, &["get-agent", id], None)
                .await,
        )
    }

    pub async fn list_agents(&self) -> RetellResult<Vec<Value>> {
        list(
            self.call("list-agents", Method::GET, &["list-agents"], None)
                .await?,
        )
    }

    /// Whether it existed.
    pub async fn delete_agent(&self, id: &str) -> RetellResult<bool> {
        let path = ["delete-agent", id];
        let answer = self.call("delete-agent", Method::DELETE, &path, None);
        Ok(found(answer.await)?.is_some())
    }

    pub async fn get_phone(&self, number: &str) -> RetellResult<Option<Value>> {
        let path = ["get-phone-number", number];
        found(
            self.call("get-phone-number", Method::GET, &path, None)
                .await,
        )
    }

    pub async fn update_phone(&self, number: &str, body: &Value) -> RetellResult<Value> {
        let path = ["update-phone-number", number];
        self.call("update-phone-number", Method::PATCH, &path, Some(body))
            .await
    }

    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> RetellResult<Value> {
        let url = self.url(path);
        let mut request = self.http.request(method, url).bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| RetellError::Transport { operation, source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        match status {
            s if s.is_success() && text.trim().is_empty() => Ok(Value::Null),
            s if s.is_success() => serde_json::from_str(&text).map_err(|e| RetellError::Decode {
                operation,
                problem: e.to_string(),
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RetellError::Unauthorized {
                status: status.as_u16(),
            }),
            StatusCode::NOT_FOUND => Err(RetellError::NotFound {
                what: operation,
                id: path.last().copied().unwrap_or_default().to_owned(),
            }),
            _ => Err(RetellError::Refused {
                operation,
                status: status.as_u16(),
                message: error_message(&text),
            }),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

/// Retell's `{"error_message"}` (or the raw text), shortened.
fn error_message(text: &str) -> String {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("error_message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.to_owned());
    message.chars().take(MAX_ERROR_CHARS).collect()
}

fn found(answer: RetellResult<Value>) -> RetellResult<Option<Value>> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(RetellError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

fn list(answer: Value) -> RetellResult<Vec<Value>> {
    match answer {
        Value::Array(items) => Ok(items),
        other => Err(RetellError::Decode {
            operation: "list",
            problem: format!("expected an array, got {}", kind(&other)),
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
