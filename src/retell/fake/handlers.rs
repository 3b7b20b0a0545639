//! The fake's endpoints: parse strictly, apply to the state, answer like Retell (201 on
//! create, 204 on delete, `{"error_message"}` on refusal).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::state::{Answer, Refusal, Shared};
use super::wire::REMOVED_PHONE_FIELDS;

type Shd = State<Arc<Shared>>;

/// Reads a body into `T`; serde names an unknown or mistyped field.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Answer<T> {
    serde_json::from_slice(body).map_err(|e| Refusal::bad_request(format!("invalid body: {e}")))
}

/// Phone bodies first refuse the removed agent fields by name, so the answer says what to
/// send instead rather than just "unknown field".
fn parse_phone<T: DeserializeOwned>(body: &[u8]) -> Answer<T> {
    let value: Value = parse(body)?;
    if let Some(field) = REMOVED_PHONE_FIELDS
        .iter()
        .find(|f| value.get(**f).is_some())
    {
        return Err(Refusal::bad_request(format!(
            "`{field}` was removed on 2026-03-31; send `inbound_agents: [{{agent_id, weight}}]` \
             (or `outbound_agents`)"
        )));
    }
    serde_json::from_value(value).map_err(|e| Refusal::bad_request(format!("invalid body: {e}")))
}

fn answer<T: Serialize>(status: StatusCode, result: Answer<T>) -> Response {
    match result {
        Ok(value) => (status, Json(value)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn deleted(result: Answer<()>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub async fn create_llm(State(s): Shd, body: Bytes) -> Response {
    answer(
        StatusCode::CREATED,
        parse(&body).and_then(|b| s.create_llm(b)),
    )
}

pub async fn update_llm(State(s): Shd, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        parse(&body).and_then(|b| s.update_llm(&id, b)),
    )
}

pub async fn get_llm(State(s): Shd, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, s.llm(&id))
}

pub async fn list_llms(State(s): Shd) -> Response {
    Json(s.snapshot(|st| st.llms.values().cloned().collect::<Vec<_>>())).into_response()
}

pub async fn delete_llm(State(s): Shd, Path(id): Path<String>) -> Response {
    deleted(s.delete_llm(&id))
}

pub async fn create_agent(State(s): Shd, body: Bytes) -> Response {
    answer(
        StatusCode::CREATED,
        parse(&body).and_then(|b| s.create_agent(b)),
    )
}

pub async fn update_agent(State(s): Shd, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        parse(&body).and_then(|b| s.update_agent(&id, b)),
    )
}

pub async fn get_agent(State(s): Shd, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, s.agent(&id))
}

pub async fn list_agents(State(s): Shd) -> Response {
    Json(s.snapshot(|st| st.agents.values().cloned().collect::<Vec<_>>())).into_response()
}

pub async fn delete_agent(State(s): Shd, Path(id): Path<String>) -> Response {
    deleted(s.delete_agent(&id))
}

pub async fn create_phone(State(s): Shd, body: Bytes) -> Response {
    answer(
        StatusCode::CREATED,
        parse_phone(&body).and_then(|b| s.create_phone(b)),
    )
}

pub async fn update_phone(State(s): Shd, Path(number): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        parse_phone(&body).and_then(|b| s.update_phone(&number, b)),
    )
}

pub async fn get_phone(State(s): Shd, Path(number): Path<String>) -> Response {
    answer(StatusCode::OK, s.phone(&number))
}

pub async fn list_phones(State(s): Shd) -> Response {
    Json(s.snapshot(|st| st.phones.values().cloned().collect::<Vec<_>>())).into_response()
}
