//! A slot as a caller says it during a live call (the tool arguments `date` and `time`):
//! `morgen`, `Dienstag`, `8. Dezember 2026` with `14 Uhr`, `vormittags` or nothing at all.
//!
//! Stricter than the post-call extraction about dates: an explicit date must carry its year
//! (`8.12.` or `8. Dezember` alone is refused), because in real calls the agent's model fills
//! a missing year with whatever it likes, often a past one. A weekday or a relative word
//! (`morgen`, `nächsten Dienstag`) needs none. Times may be a part of the day instead of a
//! clock time, since a caller asking what is free says "vormittags".

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;

use super::{date, time, when};
use crate::timestamp;

/// How far ahead a caller may book; a date beyond it was most likely misheard.
const MAX_DAYS_AHEAD: u64 = 366;

/// A part of the day, as callers say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Morning,
    Noon,
    Afternoon,
    Evening,
}

impl Period {
    /// The local hours `[from, to)` this part of the day covers.
    pub fn hours(self) -> (u32, u32) {
        match self {
            Period::Morning => (6, 12),
            Period::Noon => (11, 14),
            Period::Afternoon => (12, 18),
            Period::Evening => (17, 23),
        }
    }

    /// The German word an answer uses.
    pub fn german(self) -> &'static str {
        match self {
            Period::Morning => "vormittags",
            Period::Noon => "mittags",
            Period::Afternoon => "nachmittags",
            Period::Evening => "abends",
        }
    }

    fn parse(raw: &str) -> Option<Period> {
        let words: Vec<String> = raw
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !matches!(*w, "am" | "in" | "der" | "den" | "im"))
            .map(str::to_owned)
            .collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["vormittag" | "vormittags" | "morgens" | "früh" | "frueh"] => Some(Period::Morning),
            ["mittag" | "mittags"] => Some(Period::Noon),
            ["nachmittag" | "nachmittags"] => Some(Period::Afternoon),
            ["abend" | "abends"] => Some(Period::Evening),
            _ => None,
        }
    }
}

/// The time the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpokenTime {
    Exact(NaiveTime),
    Period(Period),
    /// No time said: any time of the day.
    AnyTime,
}

/// A day and a time as the caller said them, read in the branch's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpokenSlot {
    pub date: NaiveDate,
    pub time: SpokenTime,
}

/// Which argument could not be read, and why (the agent asks the caller again).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value:?}: {problem}")]
pub struct Unclear {
    /// `date` or `time`.
    pub field: &'static str,
    pub value: String,
    pub problem: String,
}

fn unclear(field: &'static str, value: &str, problem: impl Into<String>) -> Unclear {
    Unclear {
        field,
        value: value.to_owned(),
        problem: problem.into(),
    }
}

/// Reads `date` and `time` (absent or blank: any time) anchored at `anchor` (the call's
/// start) in `zone`. Refuses templates, vague or year-less dates, past slots and dates more
/// than a year ahead, naming the argument.
pub fn read_slot(
    date_raw: &str,
    time_raw: Option<&str>,
    anchor: DateTime<Utc>,
    zone: Tz,
) -> Result<SpokenSlot, Unclear> {
    let today = timestamp::local_date(anchor, zone)
        .filter(|_| timestamp::in_range(anchor))
        .ok_or_else(|| unclear("date", date_raw, "the call's start is outside the calendar"))?;
    let date = read_date(date_raw, today)?;
    let time = match time_raw.map(str::trim).filter(|t| !t.is_empty()) {
        None => SpokenTime::AnyTime,
        Some(raw) => read_time(raw)?,
    };
    if let SpokenTime::Exact(at) = time {
        let now = anchor.with_timezone(&zone);
        if date == today && at < now.time().with_second(0).unwrap_or(at) {
            return Err(unclear(
                "time",
                time_raw.unwrap_or_default(),
                "is in the past",
            ));
        }
    }
    Ok(SpokenSlot { date, time })
}

fn read_date(raw: &str, today: NaiveDate) -> Result<NaiveDate, Unclear> {
    when::screen(raw, "an exact date").map_err(|p| unclear("date", raw, p))?;
    let has_digit = raw.chars().any(|c| c.is_ascii_digit());
    if has_digit && !has_year(raw) {
        return Err(unclear("date", raw, "has no year"));
    }
    let day = date::parse_date(raw, today).map_err(|p| unclear("date", raw, p))?;
    if day < today {
        return Err(unclear("date", raw, "is in the past"));
    }
    let limit = today.checked_add_days(Days::new(MAX_DAYS_AHEAD));
    if limit.is_none_or(|limit| day > limit) {
        return Err(unclear("date", raw, "is more than a year ahead"));
    }
    Ok(day)
}

/// A four-digit number anywhere, or a two-digit year after a dotted day and month
/// (`8.12.26`).
fn has_year(raw: &str) -> bool {
    let runs = raw
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty());
    let four = runs.clone().any(|run| run.len() == 4);
    let dotted_short = raw
        .split_whitespace()
        .any(|token| token.trim_end_matches('.').split('.').count() == 3);
    four || dotted_short
}

fn read_time(raw: &str) -> Result<SpokenTime, Unclear> {
    if let Some(period) = Period::parse(raw) {
        return Ok(SpokenTime::Period(period));
    }
    when::screen(raw, "an exact time").map_err(|p| unclear("time", raw, p))?;
    time::parse_time(raw)
        .map(SpokenTime::Exact)
        .map_err(|p| unclear("time", raw, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    /// Saturday 2026-12-05, 10:30 in Berlin.
    fn anchor() -> DateTime<Utc> {
        "2026-12-05T09:30:00Z".parse().unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn read(date: &str, time: Option<&str>) -> Result<SpokenSlot, Unclear> {
        read_slot(date, time, anchor(), BERLIN)
    }

    #[test]
    fn german_phrasings() {
        let at = |h, m| SpokenTime::Exact(NaiveTime::from_hms_opt(h, m, 0).unwrap());
        let cases = [
            ("morgen", Some("14 Uhr"), day("2026-12-06"), at(14, 0)),
            (
                "Dienstag",
                Some("vormittags"),
                day("2026-12-08"),
                SpokenTime::Period(Period::Morning),
            ),
            (
                "nächsten Dienstag",
                Some("am Nachmittag"),
                day("2026-12-08"),
                SpokenTime::Period(Period::Afternoon),
            ),
            ("übermorgen", None, day("2026-12-07"), SpokenTime::AnyTime),
            (
                "8. Dezember 2026",
                Some("9:30"),
                day("2026-12-08"),
                at(9, 30),
            ),
            (
                "08.12.2026",
                Some("um 16 Uhr 45"),
                day("2026-12-08"),
                at(16, 45),
            ),
            (
                "2026-12-08",
                Some(""),
                day("2026-12-08"),
                SpokenTime::AnyTime,
            ),
            (
                "heute",
                Some("abends"),
                day("2026-12-05"),
                SpokenTime::Period(Period::Evening),
            ),
        ];
        for (date, time, want_day, want_time) in cases {
            let slot = read(date, time).unwrap_or_else(|e| panic!("{date} {time:?}: {e}"));
            assert_eq!(
                (slot.date, slot.time),
                (want_day, want_time),
                "{date} {time:?}"
            );
        }
    }

    #[test]
    fn odd_values_are_refused_naming_the_argument() {
        let cases = [
            ("{{current_date}}", Some("14 Uhr"), "date", "template"),
            ("08.12.", Some("14 Uhr"), "date", "no year"),
            ("8. Dezember", Some("14 Uhr"), "date", "no year"),
            ("2023-12-08", Some("14 Uhr"), "date", "past"),
            ("08.12.2024", None, "date", "past"),
            ("2029-12-08", None, "date", "year ahead"),
            ("irgendwann", None, "date", "vague"),
            ("morgen", Some("{{current_time}}"), "time", "template"),
            ("morgen", Some("gegen 14 Uhr"), "time", "vague"),
            ("heute", Some("9 Uhr"), "time", "past"),
        ];
        for (date, time, field, problem) in cases {
            let err = read(date, time).expect_err(date);
            assert_eq!(err.field, field, "{date} {time:?}: {err}");
            assert!(err.problem.contains(problem), "{date} {time:?}: {err}");
        }
    }
}
