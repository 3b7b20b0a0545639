//! Combined date-and-time values (`appointment_date_time`), the screen for vague or unfilled
//! values, and the step from a branch's wall clock to a UTC instant.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::date::parse_date;
use super::time::parse_time;

/// A parsed combined value: a wall-clock time in the branch zone, or an absolute instant when the
/// value carried its own offset (`Z`, `+02:00`).
#[derive(Debug, PartialEq)]
pub(crate) enum When {
    Local(NaiveDateTime),
    Instant(DateTime<FixedOffset>),
}

/// Words that turn a value into a wish rather than a slot. Matched as whole words, so "morgen"
/// (tomorrow) passes while "morgens" (in the morning) does not.
const VAGUE: &[&str] = &[
    "ab",
    "gegen",
    "so",
    "ca",
    "circa",
    "zirka",
    "etwa",
    "ungefähr",
    "ungefaehr",
    "zwischen",
    "irgendwann",
    "vormittag",
    "vormittags",
    "nachmittag",
    "nachmittags",
    "mittag",
    "mittags",
    "abend",
    "abends",
    "morgens",
    "früh",
    "frueh",
    "spät",
    "spaet",
    "später",
    "spaeter",
    "nachts",
    "bis",
    "oder",
    "nach",
    "vor",
    "frühestens",
    "spätestens",
    "halb",
    "viertel",
    "dreiviertel",
    "woche",
    "wochenende",
    "anfang",
    "mitte",
    "ende",
    "bald",
    "demnächst",
    "vielleicht",
    "egal",
    "flexibel",
    "around",
    "about",
    "approximately",
    "approx",
    "roughly",
    "between",
    "after",
    "before",
    "until",
    "or",
    "morning",
    "afternoon",
    "evening",
    "night",
    "sometime",
    "anytime",
    "whenever",
    "week",
    "weekend",
    "early",
    "late",
    "soon",
    "maybe",
    "asap",
    "half",
    "quarter",
];

/// Why a value cannot be used before even trying to parse it; `needs` completes the sentence
/// "a booking needs ...".
pub(crate) fn screen(raw: &str, needs: &str) -> Result<(), String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("is empty".into());
    }
    // The agent's prompt had a variable ("{{current_date}}") that was never filled in.
    if value.contains("{{") || value.contains("}}") {
        return Err("is an unfilled template".into());
    }
    if is_vague(value) {
        return Err(format!("is vague; a booking needs {needs}"));
    }
    Ok(())
}

fn is_vague(value: &str) -> bool {
    // "after" is vague, except in the one phrase that means a definite day.
    let lower = value.to_lowercase().replace("day after tomorrow", "");
    lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| VAGUE.contains(&word))
}

/// `2025-06-20 14:00`, `2025-06-20T14:00:00`, `2025-06-20T14:00:00+02:00`, `20.06.2025 14:30`,
/// `morgen um 14 Uhr`, `Dienstag, den 11. November 10 Uhr`.
pub(crate) fn parse_date_time(raw: &str, today: NaiveDate) -> Result<When, String> {
    let value = raw.trim();
    if let Some(instant) = with_offset(value) {
        return Ok(When::Instant(instant));
    }
    split_date_time(&iso_t_to_space(value), today).map(When::Local)
}

fn with_offset(value: &str) -> Option<DateTime<FixedOffset>> {
    let upper = value.to_uppercase();
    let value = match upper.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => upper,
    };
    const FORMATS: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M%:z",
    ];
    FORMATS
        .iter()
        .find_map(|format| DateTime::parse_from_str(&value, format).ok())
}

/// `2025-06-20T14:00` reads as `2025-06-20 14:00` from here on.
fn iso_t_to_space(value: &str) -> String {
    let bytes = value.as_bytes();
    let iso_date = bytes.len() > 10 && bytes[..10].iter().filter(|b| **b == b'-').count() == 2;
    if iso_date && matches!(bytes[10], b'T' | b't') {
        format!("{} {}", &value[..10], &value[11..])
    } else {
        value.to_string()
    }
}

/// Tries every split of the words into a date part and a time part. More than one reading that
/// disagrees is refused rather than picked from.
fn split_date_time(value: &str, today: NaiveDate) -> Result<NaiveDateTime, String> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let mut readings: Vec<NaiveDateTime> = Vec::new();
    let mut hint = None;
    for cut in 1..words.len() {
        let date = parse_date(&words[..cut].join(" "), today);
        let time = parse_time(&words[cut..].join(" "));
        match (date, time) {
            (Ok(date), Ok(time)) => readings.push(date.and_time(time)),
            // One half read fine, so the other half's complaint is the useful one. Later cuts win:
            // an early cut often leaves a weekday as the date and the real date in the "time".
            (Ok(_), Err(problem)) | (Err(problem), Ok(_)) => hint = Some(problem),
            (Err(_), Err(_)) => {}
        }
    }
    readings.dedup();
    match readings.as_slice() {
        [one] => Ok(*one),
        [] if parse_date(value, today).is_ok() => {
            Err("has a date but no time; a booking needs an exact time".into())
        }
        [] => Err(hint.unwrap_or_else(|| "is not a date and time we understand".into())),
        _ => Err("can be read more than one way".into()),
    }
}

/// The branch's wall clock to a UTC instant. A time inside the spring-forward gap never happens,
/// so it is refused; a time in the fall-back hour happens twice and the earlier instant is taken,
/// the first moment the clock on the wall shows it (such hours are at night and rarely booked).
pub(crate) fn to_utc(local: NaiveDateTime, zone: Tz) -> Result<DateTime<Utc>, String> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Ok(earlier.with_timezone(&Utc)),
        LocalResult::None => Err(format!(
            "does not exist in {} (daylight saving change)",
            zone.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => d,
            Err(e) => panic!("bad test date {s}: {e}"),
        }
    }

    fn local(s: &str) -> NaiveDateTime {
        match NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M") {
            Ok(t) => t,
            Err(e) => panic!("bad test time {s}: {e}"),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => panic!("bad test instant {s}: {e}"),
        }
    }

    // 2026-06-10 is a Wednesday.
    fn combined(raw: &str) -> Result<When, String> {
        parse_date_time(raw, day("2026-06-10"))
    }

    fn wall(raw: &str) -> String {
        match combined(raw) {
            Ok(When::Local(t)) => t.format("%Y-%m-%d %H:%M").to_string(),
            other => panic!("{raw:?} should be a wall-clock time, got {other:?}"),
        }
    }

    #[test]
    fn combined_wall_clock_forms() {
        assert_eq!(wall("2026-06-20 14:00"), "2026-06-20 14:00");
        assert_eq!(wall("2026-06-20T14:00"), "2026-06-20 14:00");
        assert_eq!(wall("2026-06-20T14:00:00"), "2026-06-20 14:00");
        assert_eq!(wall("2026-06-20 14:00:00"), "2026-06-20 14:00");
        assert_eq!(wall("20.06.2026 14:30"), "2026-06-20 14:30");
        assert_eq!(wall("20.06.2026, 14:30 Uhr"), "2026-06-20 14:30");
        assert_eq!(wall("morgen 14 Uhr"), "2026-06-11 14:00");
        assert_eq!(wall("morgen um 14 Uhr"), "2026-06-11 14:00");
        assert_eq!(wall("Morgen um 9 Uhr 45"), "2026-06-11 09:45");
        assert_eq!(wall("heute 16:00"), "2026-06-10 16:00");
        assert_eq!(wall("am Dienstag um 10 Uhr"), "2026-06-16 10:00");
        assert_eq!(
            wall("Donnerstag, den 11. Juni um 10 Uhr"),
            "2026-06-11 10:00"
        );
        assert_eq!(wall("tomorrow at 2:30 pm"), "2026-06-11 14:30");
        assert_eq!(wall("day after tomorrow 9 am"), "2026-06-12 09:00");
    }

    #[test]
    fn combined_with_offset_is_an_instant() {
        let at = |raw: &str| match combined(raw) {
            Ok(When::Instant(t)) => t.with_timezone(&Utc),
            other => panic!("{raw:?} should be an instant, got {other:?}"),
        };
        assert_eq!(at("2026-06-20T14:00:00Z"), utc("2026-06-20T14:00:00Z"));
        assert_eq!(at("2026-06-20T14:00Z"), utc("2026-06-20T14:00:00Z"));
        assert_eq!(at("2026-06-20t14:00:00z"), utc("2026-06-20T14:00:00Z"));
        assert_eq!(at("2026-06-20T14:00:00+02:00"), utc("2026-06-20T12:00:00Z"));
        assert_eq!(at("2026-06-20T14:00+02:00"), utc("2026-06-20T12:00:00Z"));
        assert_eq!(
            at("2026-06-20 14:00:00.000+02:00"),
            utc("2026-06-20T12:00:00Z")
        );
        assert_eq!(at("2026-06-20T14:00:00-05:00"), utc("2026-06-20T19:00:00Z"));
    }

    #[test]
    fn combined_problems_name_the_broken_half() {
        assert_eq!(
            combined("2026-06-20"),
            Err("has a date but no time; a booking needs an exact time".into())
        );
        assert_eq!(combined("morgen"), combined("2026-06-20"));
        let problem = combined("2026-06-20 24:00").err().unwrap_or_default();
        assert!(problem.contains("24:00 is not a time of day"), "{problem}");
        let problem = combined("Montag, den 11. Juni 10 Uhr")
            .err()
            .unwrap_or_default();
        assert!(problem.contains("is a Thursday"), "{problem}");
        let problem = combined("14 Uhr").err().unwrap_or_default();
        assert_eq!(problem, "is not a date and time we understand");
        let problem = combined("2026-06-20 14").err().unwrap_or_default();
        assert!(problem.contains("bare number"), "{problem}");
    }

    #[test]
    fn screen_refuses_vague_values() {
        let needs = "an exact time";
        for raw in [
            "vormittags",
            "nachmittags",
            "ab 14 Uhr",
            "so gegen 15",
            "gegen 15 Uhr",
            "ca. 14 Uhr",
            "zwischen 14 und 15 Uhr",
            "irgendwann",
            "halb drei",
            "morgen früh",
            "morgens",
            "Heute Abend",
            "nach 16 Uhr",
            "14 oder 15 Uhr",
            "nächste Woche",
            "Ende November",
            "tomorrow morning",
            "after 3 pm",
            "around 10",
        ] {
            assert_eq!(
                screen(raw, needs),
                Err("is vague; a booking needs an exact time".into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn screen_refuses_templates_and_empty_values() {
        assert_eq!(
            screen("{{current_date}}", "x"),
            Err("is an unfilled template".into())
        );
        assert_eq!(
            screen("{{uhrzeit}} Uhr", "x"),
            Err("is an unfilled template".into())
        );
        assert_eq!(screen("", "x"), Err("is empty".into()));
        assert_eq!(screen("   ", "x"), Err("is empty".into()));
    }

    #[test]
    fn screen_passes_exact_values() {
        for raw in [
            "morgen",
            "Morgen um 14 Uhr",
            "Sonntag",
            "day after tomorrow",
            "2026-06-20T14:00:00+02:00",
            "9 Uhr 45",
            "Dienstag, den 11. November",
            "2 pm",
        ] {
            assert_eq!(screen(raw, "x"), Ok(()), "{raw}");
        }
    }

    #[test]
    fn dst_conversion_in_berlin() {
        let berlin = chrono_tz::Europe::Berlin;
        // the spring-forward day itself, after the change: CEST, +02:00
        assert_eq!(
            to_utc(local("2026-03-29 14:00"), berlin),
            Ok(utc("2026-03-29T12:00:00Z"))
        );
        // the day before: still CET, +01:00
        assert_eq!(
            to_utc(local("2026-03-28 14:00"), berlin),
            Ok(utc("2026-03-28T13:00:00Z"))
        );
        // the fall-back day, after the change: CET again
        assert_eq!(
            to_utc(local("2026-10-25 14:00"), berlin),
            Ok(utc("2026-10-25T13:00:00Z"))
        );
        // 02:30 on 2026-03-29 is skipped by the clocks
        assert_eq!(
            to_utc(local("2026-03-29 02:30"), berlin),
            Err("does not exist in Europe/Berlin (daylight saving change)".into())
        );
        // 02:30 on 2026-10-25 happens twice: the first one (still CEST) is taken
        assert_eq!(
            to_utc(local("2026-10-25 02:30"), berlin),
            Ok(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn other_zones() {
        let new_york = chrono_tz::America::New_York;
        assert_eq!(
            to_utc(local("2026-06-20 09:00"), new_york),
            Ok(utc("2026-06-20T13:00:00Z"))
        );
        assert_eq!(
            to_utc(local("2026-06-20 09:00"), chrono_tz::UTC),
            Ok(utc("2026-06-20T09:00:00Z"))
        );
    }
}
