//! A callback number or email the caller left during the call, for callers whose own number
//! is unusable (`from_number: "anonymous"`).
//!
//! Sources, in this order (the first usable phone and the first usable email win, each on its
//! own):
//! 1. `call_analysis.custom_analysis_data`: written after the whole call, it has heard every
//!    correction;
//! 2. `collected_dynamic_variables`: what the agent's flow stored during the call;
//! 3. the arguments of the agent's tool calls (`transcript_with_tool_calls`, entries with
//!    `role: "tool_call_invocation"` and `arguments` as a JSON string), newest first, since a
//!    later call of the same tool carries the caller's correction.
//!
//! Nothing is passed on that Cal.com could choke on or that would reach a stranger: a phone
//! must normalise to E.164 in the tenant's region, an email must look like one. Junk is
//! dropped and the next source is tried.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::phone;

/// Every key read as a phone number, in every source. Retell agents are configured by the
/// tenant, so these are the names seen in real agent configs and tool schemas
/// (`caller_phone` in post-call analysis) plus the obvious German and English variants.
pub const PHONE_KEYS: &[&str] = &[
    "caller_phone",
    "customer_phone",
    "phone",
    "phone_number",
    "callback_number",
    "callback_phone",
    "rueckrufnummer",
    "telefon",
    "telefonnummer",
];

/// Every key read as an email address, in every source (`email` is the one in the real
/// `collect_appointment_data` tool schema).
pub const EMAIL_KEYS: &[&str] = &[
    "email",
    "e_mail",
    "customer_email",
    "caller_email",
    "email_address",
];

/// Tool-call argument strings longer than this are not parsed (a body is at most 256 KiB;
/// real arguments are a few hundred bytes).
const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;
/// RFC 5321: at most 254 characters in a forward path, 64 in the local part.
const MAX_EMAIL_CHARS: usize = 254;
const MAX_LOCAL_PART_CHARS: usize = 64;

/// What the call carries besides the caller id, each value usable as it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContact {
    /// E.164.
    pub phone: Option<String>,
    /// Lowercased domain, local part as given.
    pub email: Option<String>,
}

impl CallContact {
    pub fn is_empty(&self) -> bool {
        self.phone.is_none() && self.email.is_none()
    }
}

/// Reads the callback phone and email from a Retell call object (see the module docs for
/// the sources and their order). `default_region` reads national numbers ("DE").
pub fn callback_contact(call: &Value, default_region: &str) -> CallContact {
    let sources = sources(call);
    let phone = sources.iter().find_map(|source| {
        values(source, PHONE_KEYS).find_map(|raw| phone::normalize(raw, default_region).ok())
    });
    let email = sources
        .iter()
        .find_map(|source| values(source, EMAIL_KEYS).find_map(email));
    CallContact { phone, email }
}

/// An email address that looks deliverable: one `@`, a local part, a domain of at least two
/// labels of letters, digits and hyphens, nothing that could be a template or a list.
pub fn email(raw: &str) -> Option<String> {
    let value = raw.trim();
    if value.is_empty() || value.chars().count() > MAX_EMAIL_CHARS {
        return None;
    }
    let (local, domain) = value.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.chars().count() <= MAX_LOCAL_PART_CHARS
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`.|~".contains(c));
    if !local_ok || !domain_ok(domain) {
        return None;
    }
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

fn domain_ok(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let tld_ok = labels
        .last()
        .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    labels.len() >= 2
        && tld_ok
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The text values under `keys` in `source`, in key order. Numbers are skipped: a phone
/// number sent as a JSON number has lost its leading zero.
fn values<'a>(
    source: &'a Map<String, Value>,
    keys: &'static [&'static str],
) -> impl Iterator<Item = &'a str> + 'a {
    keys.iter()
        .filter_map(|key| source.get(*key).and_then(Value::as_str))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The objects to read, in order of precedence. PHP re-encodes an empty object as `[]`,
/// which is no object and reads as empty.
fn sources(call: &Value) -> Vec<Cow<'_, Map<String, Value>>> {
    let object = |pointer: &str| call.pointer(pointer).and_then(Value::as_object);
    let mut found: Vec<Cow<'_, Map<String, Value>>> = [
        object("/call_analysis/custom_analysis_data"),
        object("/collected_dynamic_variables"),
    ]
    .into_iter()
    .flatten()
    .map(Cow::Borrowed)
    .collect();
    found.extend(tool_arguments(call).into_iter().map(Cow::Owned));
    found
}

/// The argument objects of the call's tool invocations, newest first.
fn tool_arguments(call: &Value) -> Vec<Map<String, Value>> {
    let Some(entries) = call
        .get("transcript_with_tool_calls")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .rev()
        .filter(|entry| entry.get("role").and_then(Value::as_str) == Some("tool_call_invocation"))
        .filter_map(|entry| match entry.get("arguments")? {
            Value::String(text) if text.len() <= MAX_ARGUMENTS_BYTES => {
                serde_json::from_str::<Map<String, Value>>(text).ok()
            }
            Value::Object(map) => Some(map.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "contact_tests.rs"]
mod tests;
