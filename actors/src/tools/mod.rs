//! Live Retell tool calls: what the voice agent asks while the caller is on the line
//! (`check_availability`, `book_appointment`, `find_appointment`, `reschedule_appointment`,
//! `cancel_appointment`). The HTTP glue (signature, tenant, branch) lives in the `askpro`
//! crate; this module reads the arguments, talks to Cal.com through [`BookingApi`] and the
//! [`Booker`], and words the answer.
//!
//! Exactly once: `book_appointment` stores the appointment under the call's booking key
//! (`call_booking_key`: tenant and call id, the key `call_analyzed` uses too) with an id derived from it, and
//! books through the booker, so the later `call_analyzed` finds it booked. Retell retries a
//! tool call up to twice without an idempotency header: the answer is keyed on (company, call,
//! tool, canonical arguments), and a retry waits for the first run instead of starting another.
//!
//! [`BookingApi`]: crate::booking::BookingApi
//! [`Booker`]: crate::booking::Booker

pub mod answer;
mod book;
mod cache;
mod manage;
mod service;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::Branch;
use crate::ids::CompanyId;

pub use service::ToolService;

/// The tools the agent may call, as named in the URL and in the body's `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    CheckAvailability,
    BookAppointment,
    FindAppointment,
    RescheduleAppointment,
    CancelAppointment,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::CheckAvailability,
        Tool::BookAppointment,
        Tool::FindAppointment,
        Tool::RescheduleAppointment,
        Tool::CancelAppointment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tool::CheckAvailability => "check_availability",
            Tool::BookAppointment => "book_appointment",
            Tool::FindAppointment => "find_appointment",
            Tool::RescheduleAppointment => "reschedule_appointment",
            Tool::CancelAppointment => "cancel_appointment",
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The answer's outcome field (`available` for checks, `booked` ...), so a refusal has
    /// the shape the agent's prompt reads.
    pub fn result_field(self) -> &'static str {
        match self {
            Tool::CheckAvailability => "available",
            Tool::BookAppointment => "booked",
            Tool::FindAppointment => "found",
            Tool::RescheduleAppointment => "rescheduled",
            Tool::CancelAppointment => "cancelled",
        }
    }
}

/// The tool arguments, as the caller said them (unknown ones are ignored: the agent's schema
/// may grow before we do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ToolArgs {
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// For reschedule and cancel: which of the caller's appointments.
    #[serde(default)]
    pub appointment_id: Option<String>,
}

impl ToolArgs {
    /// A stable text of the arguments that matter: trimmed, blanks dropped, in name order.
    pub fn canonical(&self) -> String {
        let fields = [
            ("appointment_id", &self.appointment_id),
            ("date", &self.date),
            ("email", &self.email),
            ("name", &self.name),
            ("phone", &self.phone),
            ("service", &self.service),
            ("time", &self.time),
        ];
        let kept: BTreeMap<&str, String> = fields
            .iter()
            .filter_map(|(k, v)| {
                let v = v.as_deref()?.trim();
                (!v.is_empty()).then(|| (*k, v.to_lowercase()))
            })
            .collect();
        serde_json::to_string(&kept).unwrap_or_default()
    }
}

/// One tool call, its tenant and branch already established by the signed request.
#[derive(Clone, Debug)]
pub struct ToolCall {
    pub company_id: CompanyId,
    pub branch: Branch,
    pub tool: Tool,
    pub call_id: String,
    /// The caller's number in E.164; `None` for anonymous callers.
    pub from_number: Option<String>,
    /// When the call started: "morgen" is read from here.
    pub call_start: DateTime<Utc>,
    pub args: ToolArgs,
}

/// Tool tunables (`[tools]` in the config).
#[derive(Clone, Debug)]
pub struct ToolSettings {
    /// A tool answers within this; past it the answer says "pending" and the work goes on.
    pub budget: Duration,
    /// How long a branch's slots are reused (a booking through us drops them at once).
    pub slot_cache_ttl: Duration,
    /// How long an answer is kept for Retell's retries of the same call.
    pub answer_ttl: Duration,
    /// Answers kept at most (the oldest go first).
    pub max_answers: usize,
    /// Days searched for alternatives, the asked-for day included.
    pub search_days: u32,
    /// Region for numbers the caller says without a country code (`0151 ...`).
    pub default_region: String,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(8),
            slot_cache_ttl: Duration::from_secs(30),
            answer_ttl: Duration::from_secs(900),
            max_answers: 10_000,
            search_days: 7,
            default_region: "DE".into(),
        }
    }
}
