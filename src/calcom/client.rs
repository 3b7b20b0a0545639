//! The Cal.com API v2 client: one pooled `reqwest::Client` serves every tenant, each request
//! carrying that tenant's key and base URL.
//!
//! Failures are sorted by what they tell the booker (see [`BookingError`]): nothing happened
//! (`Transient`), something may have happened (`Unknown`: look the booking up before creating
//! again), or this request can never succeed (`Permanent`).
//!
//! TLS is rustls with the webpki roots, so the binary needs no system certificate store.

use std::time::{Duration, Instant};

use askpro_actors::booking::{
    Booking, BookingApi, BookingError, CreateBooking, FindBooking, SlotReservation, Slots,
};
use askpro_actors::catalog::CalcomConfig;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use self::wire::{error_from_response, parse_booking, parse_slots};
use super::{metadata_violation, API_VERSION_HEADER, BOOKINGS_API_VERSION, SLOTS_API_VERSION};

mod wire;

/// Page size when listing bookings (Cal.com allows up to 250; 100 is its default).
const PAGE_SIZE: usize = 100;
/// Pages `find_booking` reads at most: a window of one day never holds 1000 bookings of one
/// event type, so more pages mean a filter was ignored and reading on would not help.
const MAX_PAGES: usize = 10;

/// Timeouts of the shared client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Establishing the TCP connection. Failing here is safe to retry: nothing was sent.
    pub connect_timeout: Duration,
    /// The whole request, body read included. Failing here leaves the outcome unknown.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot build the cal.com http client")]
    Http(#[source] reqwest::Error),
}

/// Cal.com API v2 over HTTP. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct CalcomClient {
    http: reqwest::Client,
}

impl CalcomClient {
    pub fn new(options: ClientOptions) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // A redirect of a POST would resend or drop the booking silently; surface it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("askpro/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientBuildError::Http)?;
        Ok(Self { http })
    }

    /// Sends one request and returns `data` of Cal.com's success envelope.
    async fn call(&self, target: &CalcomConfig, call: Call<'_>) -> Result<Value, BookingError> {
        let url = endpoint(&target.base_url, call.segments, &call.query)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", target.api_key))
            .map_err(|_| refused_locally("InvalidApiKey", "the api key is not a valid header"))?;
        // Keeps the key out of any debug output of the request (ours, reqwest's, hyper's).
        auth.set_sensitive(true);
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(AUTHORIZATION, auth)
            .header(API_VERSION_HEADER, call.version);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(send_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        // The request reached Cal.com: from here on a failure leaves the outcome unknown.
        let body = response
            .bytes()
            .await
            .map_err(|err| BookingError::Unknown {
                reason: format!("reading the response failed: {}", describe(&err)),
            })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let request_id = request_id(&headers);
        if status.is_success() {
            tracing::debug!(
                method = %call.method,
                endpoint = call.name,
                status = status.as_u16(),
                elapsed_ms,
                "cal.com request"
            );
            return success_data(&body);
        }
        let error = error_from_response(status, &headers, &body, Utc::now());
        tracing::warn!(
            method = %call.method,
            endpoint = call.name,
            status = status.as_u16(),
            elapsed_ms,
            request_id = request_id.as_deref().unwrap_or(""),
            error = %error,
            "cal.com request failed"
        );
        Err(error)
    }
}

/// One request: what, where (path segments after `/v2`), which contract version, and with what.
struct Call<'a> {
    name: &'static str,
    method: Method,
    segments: &'a [&'a str],
    version: &'static str,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl<'a> Call<'a> {
    fn new(name: &'static str, method: Method, segments: &'a [&'a str]) -> Self {
        let version = if segments.first() == Some(&"slots") {
            SLOTS_API_VERSION
        } else {
            BOOKINGS_API_VERSION
        };
        Self {
            name,
            method,
            segments,
            version,
            query: Vec::new(),
            body: None,
        }
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

#[async_trait]
impl BookingApi for CalcomClient {
    async fn slots(
        &self,
        target: &CalcomConfig,
        event_type_id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        time_zone: &str,
    ) -> Result<Slots, BookingError> {
        let call = Call::new("slots", Method::GET, &["slots"])
            .query("eventTypeId", event_type_id)
            .query("start", iso(start))
            .query("end", iso(end))
            .query("timeZone", time_zone);
        let data = self.call(target, call).await?;
        parse_slots(&data)
    }

    async fn reserve_slot(
        &self,
        target: &CalcomConfig,
        event_type_id: i64,
        start: DateTime<Utc>,
        length_minutes: Option<u32>,
    ) -> Result<SlotReservation, BookingError> {
        let mut body = json!({"eventTypeId": event_type_id, "slotStart": iso(start)});
        if let Some(minutes) = length_minutes {
            body["slotDuration"] = minutes.into();
        }
        let call = Call::new("reserve_slot", Method::POST, &["slots", "reservations"]).body(body);
        let data = self.call(target, call).await?;
        let field = |name: &str| data.get(name).and_then(Value::as_str);
        let instant = |name: &str| {
            field(name)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        // The hold exists but we cannot read it: it simply runs out after its 5 minutes.
        match (field("reservationUid"), instant("reservationUntil")) {
            (Some(uid), Some(until)) => Ok(SlotReservation {
                uid: uid.to_owned(),
                start,
                until,
            }),
            _ => Err(BookingError::Unknown {
                reason: "unreadable slot reservation".into(),
            }),
        }
    }

    async fn release_slot(&self, target: &CalcomConfig, uid: &str) -> Result<(), BookingError> {
        let segments = ["slots", "reservations", uid];
        let call = Call::new("release_slot", Method::DELETE, &segments);
        self.call(target, call).await.map(drop)
    }

    async fn create_booking(
        &self,
        target: &CalcomConfig,
        request: &CreateBooking,
    ) -> Result<Booking, BookingError> {
        let body = create_body(request)?;
        let call = Call::new("create_booking", Method::POST, &["bookings"]).body(body);
        let data = self.call(target, call).await?;
        // Cal.com answers a recurring event type with an array; ours are single bookings.
        let data = match data {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        // The booking exists but we cannot read it: the booker must look it up.
        parse_booking(&data).map_err(|reason| BookingError::Unknown { reason })
    }

    async fn find_booking(
        &self,
        target: &CalcomConfig,
        find: &FindBooking<'_>,
    ) -> Result<Option<Booking>, BookingError> {
        // Cal.com filters `afterStart` on the start and `beforeEnd` on the end: a minute of
        // slack before covers rounding, a day after covers any booking length we make.
        let after_start = find.start - chrono::Duration::minutes(1);
        let before_end = find.start + chrono::Duration::days(1);
        let mut fallback: Option<Booking> = None;
        for page in 0..MAX_PAGES {
            // Filtered by time window and event type only: our key in the metadata is what
            // identifies the booking, and an attendee filter could miss it (case, edits).
            let call = Call::new("list_bookings", Method::GET, &["bookings"])
                .query("eventTypeId", find.event_type_id)
                .query("afterStart", iso(after_start))
                .query("beforeEnd", iso(before_end))
                .query("take", PAGE_SIZE)
                .query("skip", page * PAGE_SIZE);
            let data = self.call(target, call).await?;
            let Value::Array(items) = data else {
                return Err(BookingError::Unknown {
                    reason: "the bookings list is not an array".into(),
                });
            };
            for item in &items {
                let booking = match parse_booking(item) {
                    Ok(booking) => booking,
                    Err(reason) => {
                        // Seated or recurring shapes we never create; not ours.
                        tracing::debug!(%reason, "skipping an unreadable listed booking");
                        continue;
                    }
                };
                // Key, tenant and appointment: another tenant on this account may hold a
                // booking with the same key material.
                if !find.owns(&booking) {
                    continue;
                }
                // A rescheduled booking keeps our key on both the old (cancelled) and the new
                // booking: the live one is the answer.
                if matches!(booking.status.as_str(), "accepted" | "pending") {
                    return Ok(Some(booking));
                }
                if fallback.as_ref().is_none_or(|f| f.id < booking.id) {
                    fallback = Some(booking);
                }
            }
            if items.len() < PAGE_SIZE {
                return Ok(fallback);
            }
        }
        tracing::warn!(
            event_type_id = find.event_type_id,
            pages = MAX_PAGES,
            "cal.com booking search stopped at its page limit"
        );
        Ok(fallback)
    }

    async fn cancel_booking(
        &self,
        target: &CalcomConfig,
        uid: &str,
        reason: Option<&str>,
    ) -> Result<(), BookingError> {
        let mut body = Map::new();
        if let Some(reason) = reason {
            body.insert("cancellationReason".into(), reason.into());
        }
        let segments = ["bookings", uid, "cancel"];
        let call = Call::new("cancel_booking", Method::POST, &segments).body(Value::Object(body));
        self.call(target, call).await.map(drop)
    }

    async fn reschedule_booking(
        &self,
        target: &CalcomConfig,
        uid: &str,
        start: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<Booking, BookingError> {
        let mut body = Map::new();
        body.insert("start".into(), iso(start).into());
        if let Some(reason) = reason {
            body.insert("reschedulingReason".into(), reason.into());
        }
        let segments = ["bookings", uid, "reschedule"];
        let call =
            Call::new("reschedule_booking", Method::POST, &segments).body(Value::Object(body));
        let data = self.call(target, call).await?;
        parse_booking(&data).map_err(|reason| BookingError::Unknown { reason })
    }
}

/// Refusals we can make without asking Cal.com: what it would answer with a 400.
fn refused_locally(code: &str, message: impl Into<String>) -> BookingError {
    BookingError::Permanent {
        status: 400,
        code: code.into(),
        message: format!("refused before sending: {}", message.into()),
    }
}

fn create_body(request: &CreateBooking) -> Result<Value, BookingError> {
    let metadata = request
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    if let Some(violation) = metadata_violation(metadata) {
        return Err(refused_locally("InvalidMetadata", violation));
    }
    let attendee = &request.attendee;
    if attendee.email.is_none() && attendee.phone.is_none() {
        return Err(refused_locally(
            "InvalidAttendee",
            "the attendee needs an email or a phone number",
        ));
    }
    let mut wire_attendee = Map::new();
    wire_attendee.insert("name".into(), attendee.name.clone().into());
    wire_attendee.insert("timeZone".into(), attendee.time_zone.clone().into());
    if let Some(email) = &attendee.email {
        wire_attendee.insert("email".into(), email.clone().into());
    }
    if let Some(phone) = &attendee.phone {
        wire_attendee.insert("phoneNumber".into(), phone.clone().into());
    }
    if let Some(language) = &attendee.language {
        wire_attendee.insert("language".into(), language.clone().into());
    }
    let mut body = json!({
        "start": iso(request.start),
        "eventTypeId": request.event_type_id,
        "attendee": wire_attendee,
        "metadata": request.metadata,
    });
    if let Some(minutes) = request.length_minutes {
        body["lengthInMinutes"] = minutes.into();
    }
    Ok(body)
}

/// `base_url` + `/v2/` + segments (each percent-encoded, so a uid cannot change the path).
fn endpoint(
    base_url: &str,
    segments: &[&str],
    query: &[(&'static str, String)],
) -> Result<Url, BookingError> {
    let mut url = Url::parse(base_url)
        .map_err(|err| refused_locally("InvalidBaseUrl", format!("base url: {err}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(refused_locally(
                "InvalidBaseUrl",
                format!("unsupported scheme `{other}`"),
            ))
        }
    }
    url.path_segments_mut()
        .map_err(|()| refused_locally("InvalidBaseUrl", "the base url cannot take a path"))?
        .pop_if_empty()
        .push("v2")
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Sorts a failure to get a response: provably unsent (connect) versus maybe acted on.
fn send_error(err: reqwest::Error) -> BookingError {
    let reason = describe(&err);
    if err.is_builder() {
        return refused_locally("InvalidRequest", reason);
    }
    // Checked before the timeout: a connect timeout also never sent the request.
    if err.is_connect() {
        return BookingError::Transient {
            reason: format!("cannot connect: {reason}"),
            retry_after: None,
            status: None,
        };
    }
    if err.is_timeout() {
        return BookingError::Unknown {
            reason: format!("timed out waiting for cal.com: {reason}"),
        };
    }
    BookingError::Unknown {
        reason: format!("the request broke off: {reason}"),
    }
}

/// The error and its causes on one line, without the URL (its query may carry an email).
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn success_data(body: &[u8]) -> Result<Value, BookingError> {
    let envelope: Value = serde_json::from_slice(body).map_err(|err| BookingError::Unknown {
        reason: format!("unreadable success body: {err}"),
    })?;
    match envelope {
        Value::Object(mut fields) if fields.get("status") != Some(&json!("error")) => {
            Ok(fields.remove("data").unwrap_or(Value::Null))
        }
        _ => Err(BookingError::Unknown {
            reason: "a 2xx answer without cal.com's success envelope".into(),
        }),
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
