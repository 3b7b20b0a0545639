//! `POST /webhooks/retell/{company_id}/functions/{tool}`: Retell's custom tool calls during a
//! live call, answered synchronously with what the agent says next.
//!
//! Order: body limit (router layer, 413) → tenant from the path (404) → signature against the
//! tenant's Retell secrets plus the global one (401, nothing done) → body → branch from
//! `call.to_number` through the routing cache, only if it is this tenant's (404) → the tool
//! ([`askpro_actors::tools::ToolService`], which answers within `tools.budget_ms`).

use std::sync::Arc;

use askpro_actors::phone;
use askpro_actors::timestamp;
use askpro_actors::tools::{Tool, ToolArgs, ToolCall};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::routing::ResolveError;
use crate::signature::{self, SecretRef};

/// The body Retell sends (`args_at_root` off); other fields are ignored.
#[derive(Deserialize)]
struct ToolRequest {
    #[serde(default)]
    name: Option<String>,
    call: CallPart,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
struct CallPart {
    call_id: String,
    #[serde(default)]
    from_number: Option<String>,
    #[serde(default)]
    to_number: Option<String>,
    #[serde(default)]
    start_timestamp: Option<i64>,
}

/// `POST /webhooks/retell/{company_id}/functions/{tool}`.
pub async fn retell_tool(
    State(app): State<Arc<AppState>>,
    Path((company, tool)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match answer(&app, &company, &tool, &headers, body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => {
            tracing::debug!(status = error.status.as_u16(), error = %error.message, tool = %tool, "tool call refused");
            error.into_response()
        }
    }
}

async fn answer(
    app: &AppState,
    company: &str,
    tool: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "bad_body", rejection.body_text())
    })?;
    let tenant = app.tenant(company).await?;
    let mut secrets: Vec<SecretRef<'_>> = tenant
        .retell
        .iter()
        .map(|s| SecretRef {
            id: &s.id,
            value: &s.value,
        })
        .collect();
    secrets.extend(app.global_retell());
    let header = super::webhooks::signature_header(headers, signature::RETELL_HEADER)?;
    let now_ms = app.clock.now().timestamp_millis();
    let tolerance_ms = app.config.ingress.signature_tolerance_secs as i64 * 1000;
    signature::verify_retell(header, &body, &secrets, now_ms, tolerance_ms)
        .map_err(|e| super::webhooks::unauthorized(e.to_string()))?;
    let tool = Tool::parse(tool).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!("no tool named {tool:?}"),
        )
    })?;
    let request: ToolRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("body is not a tool call: {e}")))?;
    if request.name.as_deref().is_some_and(|n| n != tool.as_str()) {
        return Err(bad_request(format!(
            "name {:?} does not match the tool in the path ({})",
            request.name.unwrap_or_default(),
            tool.as_str()
        )));
    }
    let args: ToolArgs = match request.args {
        None | Some(Value::Null) => ToolArgs::default(),
        Some(args) => {
            serde_json::from_value(args).map_err(|e| bad_request(format!("args: {e}")))?
        }
    };
    let company_id = tenant.company.id;
    let branch = branch(app, company_id, request.call.to_number.as_deref()).await?;
    let region = &app.config.phone.default_region;
    // An unreadable caller number is treated as anonymous: it finds nothing and books nothing
    // under a guessed number.
    let from_number =
        phone::normalize_caller(request.call.from_number.as_deref(), region).unwrap_or_default();
    let call_start = request
        .call
        .start_timestamp
        .and_then(timestamp::from_ms)
        .unwrap_or_else(|| app.clock.now());
    let service = app
        .tools
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this process answers no tool calls"))?;
    let call = ToolCall {
        company_id,
        branch,
        tool,
        call_id: request.call.call_id,
        from_number,
        call_start,
        args,
    };
    Ok(service.handle(call).await)
}

/// The branch that owns `to_number`, if it belongs to `company_id`.
async fn branch(
    app: &AppState,
    company_id: askpro_actors::CompanyId,
    to_number: Option<&str>,
) -> Result<askpro_actors::domain::Branch, ApiError> {
    let number = to_number
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request("call.to_number is missing".into()))?;
    let resolved = app.inbound.resolve(number).await.map_err(|e| match e {
        ResolveError::InvalidNumber(e) => {
            bad_request(format!("call.to_number is not a phone number: {e}"))
        }
        ResolveError::Store(e) => ApiError::unavailable(format!("routing lookup failed: {e}")),
    })?;
    let not_ours = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_branch",
            format!("{number} is not a branch of company {company_id}"),
        )
    };
    let route = resolved
        .route
        .filter(|r| r.company_id == company_id)
        .ok_or_else(not_ours)?;
    app.store
        .branch(company_id, route.branch_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("branch lookup failed: {e}")))?
        .ok_or_else(not_ours)
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_tool_call", message)
}
