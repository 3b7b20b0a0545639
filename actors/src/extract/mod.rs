//! Appointment extraction: which slot, if any, a Retell call asked for.
//!
//! Pure and synchronous: a call object in, an [`AppointmentRequest`] (or a reason why not) out.
//! Nothing here guesses: a vague, partial, templated or past value is an [`ExtractError`] naming
//! the exact field, so the call goes to a human instead of into a wrong slot.
//!
//! Sources, first one with any date or time wins:
//! 1. `call_analysis.custom_analysis_data`: the post-call analysis, written after the whole call,
//!    so it has seen every correction the caller made;
//! 2. `collected_dynamic_variables`: what the agent's flow stored during the call (the only
//!    source in `call_ended`, which has no analysis yet);
//! 3. the call's top-level `appointment_date` / `appointment_time` (the original design).
//!
//! A date and a time are never taken from different sources. Each source is a different moment
//! of the call, and a date from one with a time from the other can make a slot the caller never
//! said ("Dienstag" corrected to "Mittwoch" in one, "10 Uhr" from the abandoned first attempt in
//! the other). Name and service may come from any source, the chosen one first: they are facts
//! about the caller, not halves of one value. The caller's callback phone and e-mail are read by
//! [`contact`], which also looks at the agent's tool calls and refuses junk.
//!
//! `appointment_made: false` in the analysis means no booking, whatever else was collected: the
//! analysis has heard the end of the call, where the caller may have backed out.

pub mod contact;
mod date;
pub mod spoken;
mod time;
mod when;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::timestamp;

use when::When;

/// A slot the caller asked for, ready to be checked against the calendar and booked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRequest {
    /// Wall-clock start in the branch's zone.
    pub start_local: NaiveDateTime,
    /// The same start as an instant: what Cal.com is sent.
    pub start: DateTime<Utc>,
    pub service_name: Option<String>,
    pub customer_name: Option<String>,
    /// The fields the date and the time were read from (the same one for a combined value).
    pub date_field: String,
    pub time_field: String,
}

/// Why a call that looks like a booking request cannot be booked as it stands.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field} = {value:?}: {problem}")]
pub struct ExtractError {
    /// Full path inside the call object, e.g. `call_analysis.custom_analysis_data.appointment_time`.
    pub field: String,
    pub value: String,
    pub problem: String,
}

const ANALYSIS: &str = "call_analysis.custom_analysis_data";
const COLLECTED: &str = "collected_dynamic_variables";

const COMBINED_KEYS: &[&str] = &["appointment_date_time"];
const DATE_KEYS: &[&str] = &["appointment_date", "datum"];
const TIME_KEYS: &[&str] = &["appointment_time", "uhrzeit"];
const SERVICE_KEYS: &[&str] = &["service_name", "dienstleistung"];
const NAME_KEYS: &[&str] = &["caller_full_name", "customer_name", "name"];

/// The call's start (`start_timestamp`, ms since the epoch): the anchor for "heute" and "morgen".
pub fn call_start(call: &Value) -> Option<DateTime<Utc>> {
    call.get("start_timestamp")
        .and_then(Value::as_i64)
        .and_then(timestamp::from_ms)
}

/// Reads the requested slot from a Retell call object (the `call` inside `call_ended` /
/// `call_analyzed`). `anchor` is the call's start (see [`call_start`]) and `zone` the branch's
/// zone: relative words are resolved there, and a slot before `anchor` is refused.
///
/// `Ok(None)`: no source has a date or time (an ordinary call), or the analysis says
/// `appointment_made: false`.
pub fn extract(
    call: &Value,
    anchor: DateTime<Utc>,
    zone: Tz,
) -> Result<Option<AppointmentRequest>, ExtractError> {
    let made = appointment_made(call);
    if made == Some(false) {
        return Ok(None);
    }
    let sources = sources(call);
    let Some((index, slot)) = choose(&sources)? else {
        return match made {
            Some(true) => Err(made_without_slot()),
            _ => Ok(None),
        };
    };
    let today = anchor_day(anchor, zone)?;
    let (start_local, start) = resolve(&slot, today, zone)?;
    not_past(&slot, start_local, start, anchor, zone, today)?;
    let (date_field, time_field) = slot.fields();
    Ok(Some(AppointmentRequest {
        start_local,
        start,
        service_name: detail(&sources, index, SERVICE_KEYS, |_| true),
        customer_name: detail(&sources, index, NAME_KEYS, |_| true),
        date_field,
        time_field,
    }))
}

/// The call's day in the branch's zone. The anchor comes from the signed body: one outside
/// the accepted range is refused rather than shifted (chrono panics near its limits).
fn anchor_day(anchor: DateTime<Utc>, zone: Tz) -> Result<NaiveDate, ExtractError> {
    timestamp::local_date(anchor, zone)
        .filter(|_| timestamp::in_range(anchor))
        .ok_or_else(|| ExtractError {
            field: "start_timestamp".into(),
            value: anchor.timestamp_millis().to_string(),
            problem: "is outside the supported range (years 1970 to 9999)".into(),
        })
}

/// Where the date and time were found, not yet parsed.
enum Slot<'a> {
    Combined(Field<'a>),
    Split { date: Field<'a>, time: Field<'a> },
}

impl Slot<'_> {
    fn fields(&self) -> (String, String) {
        match self {
            Slot::Combined(field) => (field.path.clone(), field.path.clone()),
            Slot::Split { date, time } => (date.path.clone(), time.path.clone()),
        }
    }
}

/// One value and where it came from. `present` is false for a partner that is absent altogether.
struct Field<'a> {
    path: String,
    raw: &'a str,
    present: bool,
}

impl Field<'_> {
    fn error(&self, problem: impl Into<String>) -> ExtractError {
        ExtractError {
            field: self.path.clone(),
            value: self.raw.to_string(),
            problem: problem.into(),
        }
    }

    fn is_blank(&self) -> bool {
        self.raw.trim().is_empty()
    }

    /// Missing, empty, templated or vague values fail here, before any parsing.
    fn screen(&self, needs: &str) -> Result<(), ExtractError> {
        if !self.present {
            return Err(self.error(format!("is missing; a booking needs {needs}")));
        }
        when::screen(self.raw, needs).map_err(|problem| self.error(problem))
    }
}

struct Source<'a> {
    /// Path of the object for error messages; empty for the call's top level.
    prefix: &'static str,
    map: Option<&'a Map<String, Value>>,
    combined: &'static [&'static str],
    date: &'static [&'static str],
    time: &'static [&'static str],
    /// Whether name, phone, e-mail and service are read here. Not at the call's top level, whose
    /// generic keys belong to Retell.
    details: bool,
}

fn sources(call: &Value) -> [Source<'_>; 3] {
    fn object(v: Option<&Value>) -> Option<&Map<String, Value>> {
        v.and_then(Value::as_object)
    }
    [
        Source {
            prefix: ANALYSIS,
            // PHP re-encodes an empty object as `[]`; as_object then gives None, which reads as empty.
            map: object(call.pointer("/call_analysis/custom_analysis_data")),
            combined: COMBINED_KEYS,
            date: DATE_KEYS,
            time: TIME_KEYS,
            details: true,
        },
        Source {
            prefix: COLLECTED,
            map: object(call.get(COLLECTED)),
            combined: COMBINED_KEYS,
            date: DATE_KEYS,
            time: TIME_KEYS,
            details: true,
        },
        Source {
            prefix: "",
            map: call.as_object(),
            combined: &[],
            date: &["appointment_date"],
            time: &["appointment_time"],
            details: false,
        },
    ]
}

/// The first source with a date or time, and where it sits in `sources`.
fn choose<'a>(sources: &[Source<'a>]) -> Result<Option<(usize, Slot<'a>)>, ExtractError> {
    for (index, source) in sources.iter().enumerate() {
        if let Some(slot) = source.slot()? {
            return Ok(Some((index, slot)));
        }
    }
    Ok(None)
}

impl<'a> Source<'a> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// `None` when every date and time key is absent or blank: analysis models fill string
    /// fields with "" on calls without an appointment, and that is no request.
    fn slot(&self) -> Result<Option<Slot<'a>>, ExtractError> {
        if let Some(combined) = self.lookup(self.combined)?.filter(|f| !f.is_blank()) {
            return Ok(Some(Slot::Combined(combined)));
        }
        let date = self.lookup(self.date)?;
        let time = self.lookup(self.time)?;
        let said = |f: &Option<Field<'_>>| f.as_ref().is_some_and(|f| !f.is_blank());
        if !said(&date) && !said(&time) {
            return Ok(None);
        }
        Ok(Some(Slot::Split {
            date: date.unwrap_or_else(|| self.absent(self.date)),
            time: time.unwrap_or_else(|| self.absent(self.time)),
        }))
    }

    /// The first non-blank text among `keys`; a blank one only when there is nothing better, so
    /// that a blank partner of a real value can be reported by name.
    fn lookup(&self, keys: &[&str]) -> Result<Option<Field<'a>>, ExtractError> {
        let Some(map) = self.map else {
            return Ok(None);
        };
        let mut blank = None;
        for key in keys {
            let field = |raw: &'a str| Field {
                path: self.path(key),
                raw,
                present: true,
            };
            match map.get(*key) {
                None | Some(Value::Null) => {}
                Some(Value::String(raw)) if raw.trim().is_empty() => {
                    blank.get_or_insert_with(|| field(raw.as_str()));
                }
                Some(Value::String(raw)) => return Ok(Some(field(raw.as_str()))),
                Some(other) => {
                    return Err(ExtractError {
                        field: self.path(key),
                        value: other.to_string(),
                        problem: "is not text".into(),
                    })
                }
            }
        }
        Ok(blank)
    }

    fn absent(&self, keys: &[&str]) -> Field<'a> {
        let key = keys.first().copied().unwrap_or_default();
        Field {
            path: self.path(key),
            raw: "",
            present: false,
        }
    }

    /// A usable detail value: text, not blank, not a template, accepted by `keep`.
    fn text(&self, keys: &[&str], keep: fn(&str) -> bool) -> Option<String> {
        let map = self.map?;
        keys.iter()
            .filter_map(|key| map.get(*key).and_then(Value::as_str))
            .map(str::trim)
            .find(|v| !v.is_empty() && !v.contains("{{") && keep(v))
            .map(str::to_string)
    }
}

fn detail(
    sources: &[Source<'_>],
    first: usize,
    keys: &[&str],
    keep: fn(&str) -> bool,
) -> Option<String> {
    let rest = (0..sources.len()).filter(|i| *i != first);
    std::iter::once(first)
        .chain(rest)
        .filter_map(|i| sources.get(i))
        .filter(|source| source.details)
        .find_map(|source| source.text(keys, keep))
}

fn resolve(
    slot: &Slot<'_>,
    today: NaiveDate,
    zone: Tz,
) -> Result<(NaiveDateTime, DateTime<Utc>), ExtractError> {
    match slot {
        Slot::Combined(field) => {
            field.screen("an exact date and time")?;
            match when::parse_date_time(field.raw, today).map_err(|p| field.error(p))? {
                When::Instant(at) => {
                    let start = at.with_timezone(&Utc);
                    let local = in_calendar(start.naive_utc()).map_err(|p| field.error(p))?;
                    let offset = zone.offset_from_utc_datetime(&local).fix();
                    Ok((local + offset, start))
                }
                When::Local(local) => {
                    let local = in_calendar(local).map_err(|p| field.error(p))?;
                    let start = when::to_utc(local, zone).map_err(|p| field.error(p))?;
                    Ok((local, start))
                }
            }
        }
        Slot::Split { date, time } => {
            date.screen("an exact date")?;
            let day = date::parse_date(date.raw, today).map_err(|p| date.error(p))?;
            time.screen("an exact time")?;
            let clock = time::parse_time(time.raw).map_err(|p| time.error(p))?;
            let local = in_calendar(day.and_time(clock)).map_err(|p| date.error(p))?;
            // A wall-clock time that the DST change skips is the time's fault, not the date's.
            let start = when::to_utc(local, zone).map_err(|p| time.error(p))?;
            Ok((local, start))
        }
    }
}

/// A slot in the years 1970 to 9999 (the range every zone shift stays safe in), else the
/// problem to report.
fn in_calendar(at: NaiveDateTime) -> Result<NaiveDateTime, String> {
    match (1970..=9999).contains(&at.year()) {
        true => Ok(at),
        false => Err("is beyond the calendar (years 1970 to 9999)".into()),
    }
}

/// A slot strictly before the call's start cannot be what the caller wanted. An earlier day is
/// blamed on the date, an earlier hour of the call's own day on the time.
fn not_past(
    slot: &Slot<'_>,
    local: NaiveDateTime,
    start: DateTime<Utc>,
    anchor: DateTime<Utc>,
    zone: Tz,
    today: NaiveDate,
) -> Result<(), ExtractError> {
    if start >= anchor {
        return Ok(());
    }
    let blamed = match slot {
        Slot::Combined(field) => field,
        Slot::Split { date, .. } if local.date() < today => date,
        Slot::Split { time, .. } => time,
    };
    Err(blamed.error(format!(
        "is in the past (call started {}, asked for {})",
        anchor.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z"),
        local.format("%Y-%m-%d %H:%M"),
    )))
}

/// `custom_analysis_data.appointment_made`, as a JSON bool or the text "true"/"false".
fn appointment_made(call: &Value) -> Option<bool> {
    match call.pointer("/call_analysis/custom_analysis_data/appointment_made")? {
        Value::Bool(made) => Some(*made),
        Value::String(text) => match text.trim().to_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The analysis claims a booking but no source says when: someone has to look.
fn made_without_slot() -> ExtractError {
    ExtractError {
        field: format!("{ANALYSIS}.appointment_date_time"),
        value: String::new(),
        problem: "is missing although appointment_made is true".into(),
    }
}
