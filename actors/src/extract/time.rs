//! Clock times as agents write them down: `14:00`, `14.30`, `14 Uhr`, `9 Uhr 45`, `2:30 pm`.
//!
//! Anything that needs interpretation (`halb drei`, a bare `9`, `24:00`) is refused: a wrong guess
//! books a slot nobody asked for, while a refusal only sends the call to a human.

use chrono::NaiveTime;

#[derive(Clone, Copy)]
enum Meridiem {
    Am,
    Pm,
}

/// Parses one exact clock time. Vague words and templates are screened out before this runs;
/// whatever is left must be a time in one of the forms above.
pub(crate) fn parse_time(raw: &str) -> Result<NaiveTime, String> {
    let lower = raw.trim().to_lowercase();
    let s = strip_lead(&lower);
    // "14-15 Uhr" or "14 bis 15" is a window, not a slot.
    if s.contains(['-', '–', '/']) {
        return Err("looks like a range; a booking needs an exact time".into());
    }
    let (s, meridiem) = split_meridiem(s);
    let (hour, minute) = match s.split_once("uhr") {
        Some((clock, rest)) => uhr_form(clock.trim(), rest.trim())?,
        None => clock_form(s, meridiem.is_some())?,
    };
    let hour = apply_meridiem(hour, meridiem)?;
    build(hour, minute)
}

/// "um 14 Uhr" / "at 2 pm": the preposition carries no information.
fn strip_lead(s: &str) -> &str {
    ["um ", "at "]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .map_or(s, str::trim)
}

fn split_meridiem(s: &str) -> (&str, Option<Meridiem>) {
    let table = [
        ("a.m.", Meridiem::Am),
        ("p.m.", Meridiem::Pm),
        ("am", Meridiem::Am),
        ("pm", Meridiem::Pm),
    ];
    for (suffix, meridiem) in table {
        if let Some(rest) = s.strip_suffix(suffix) {
            return (rest.trim(), Some(meridiem));
        }
    }
    (s, None)
}

/// `14 Uhr`, `14Uhr`, `9 Uhr 45`, `9:45 Uhr`.
fn uhr_form(clock: &str, rest: &str) -> Result<(u32, u32), String> {
    if rest.is_empty() {
        // "Uhr" marks a bare hour as a clock time, so "14 Uhr" is exact.
        return clock_form(clock, true);
    }
    match (number(clock, 1, 2), number(rest, 1, 2)) {
        (Some(hour), Some(minute)) => Ok((hour, minute)),
        _ => Err(not_understood()),
    }
}

/// `14:00`, `14.30`, `14:00:00`, or a bare hour when something else (Uhr, pm) marks it as one.
fn clock_form(s: &str, bare_hour_ok: bool) -> Result<(u32, u32), String> {
    let parts: Vec<&str> = s.split([':', '.']).collect();
    match parts.as_slice() {
        [hour] => match number(hour, 1, 2) {
            Some(hour) if bare_hour_ok => Ok((hour, 0)),
            // "9" could be 09:00 or 21:00 in speech; only "9 Uhr" or "9:00" says which.
            Some(_) => Err("is a bare number, not a clock time (write 14:00 or 14 Uhr)".into()),
            None => Err(not_understood()),
        },
        [hour, minute] => hour_minute(hour, minute),
        // Seconds are tolerated only when they are zero: a slot never starts mid-minute.
        [hour, minute, "00"] => hour_minute(hour, minute),
        _ => Err(not_understood()),
    }
}

fn hour_minute(hour: &str, minute: &str) -> Result<(u32, u32), String> {
    // Two minute digits exactly, so "14.3" (a number that lost its zero) is not 14:03.
    match (number(hour, 1, 2), number(minute, 2, 2)) {
        (Some(hour), Some(minute)) => Ok((hour, minute)),
        _ => Err(not_understood()),
    }
}

fn apply_meridiem(hour: u32, meridiem: Option<Meridiem>) -> Result<u32, String> {
    match meridiem {
        None => Ok(hour),
        Some(_) if !(1..=12).contains(&hour) => {
            Err(format!("hour {hour} is not a 12-hour clock time"))
        }
        Some(Meridiem::Am) => Ok(hour % 12),
        Some(Meridiem::Pm) => Ok(hour % 12 + 12),
    }
}

fn build(hour: u32, minute: u32) -> Result<NaiveTime, String> {
    if hour == 24 {
        return Err("24:00 is not a time of day (00:00 belongs to the next day)".into());
    }
    NaiveTime::from_hms_opt(hour, minute, 0)
        .ok_or_else(|| format!("{hour}:{minute:02} is not a time of day"))
}

/// Digits only, with a length in `min..=max`; signs and spaces are not numbers here.
pub(crate) fn number(s: &str, min: usize, max: usize) -> Option<u32> {
    let fits = (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if fits {
        s.parse().ok()
    } else {
        None
    }
}

fn not_understood() -> String {
    "is not a time we understand".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match parse_time(raw) {
            Ok(t) => t.format("%H:%M").to_string(),
            Err(e) => panic!("{raw:?} should parse, got {e}"),
        }
    }

    fn err(raw: &str) -> String {
        match parse_time(raw) {
            Ok(t) => panic!("{raw:?} should be refused, got {t}"),
            Err(e) => e,
        }
    }

    #[test]
    fn colon_and_dot_forms() {
        assert_eq!(ok("14:00"), "14:00");
        assert_eq!(ok("14.30"), "14:30");
        assert_eq!(ok("9:05"), "09:05");
        assert_eq!(ok("09:45"), "09:45");
        assert_eq!(ok("14:00:00"), "14:00");
        assert_eq!(ok("00:00"), "00:00");
        assert_eq!(ok("23:59"), "23:59");
        assert_eq!(ok("  16:00 "), "16:00");
    }

    #[test]
    fn uhr_forms() {
        assert_eq!(ok("14 Uhr"), "14:00");
        assert_eq!(ok("14Uhr"), "14:00");
        assert_eq!(ok("10 UHR"), "10:00");
        assert_eq!(ok("9 Uhr 45"), "09:45");
        assert_eq!(ok("9 Uhr 5"), "09:05");
        assert_eq!(ok("9:45 Uhr"), "09:45");
        assert_eq!(ok("14.30 Uhr"), "14:30");
        assert_eq!(ok("um 14 Uhr"), "14:00");
        assert_eq!(ok("Um 9:30"), "09:30");
    }

    #[test]
    fn twelve_hour_forms() {
        assert_eq!(ok("2 pm"), "14:00");
        assert_eq!(ok("2pm"), "14:00");
        assert_eq!(ok("2:30 pm"), "14:30");
        assert_eq!(ok("2:30 PM"), "14:30");
        assert_eq!(ok("9 a.m."), "09:00");
        assert_eq!(ok("at 11 am"), "11:00");
        assert_eq!(ok("12 pm"), "12:00");
        assert_eq!(ok("12 am"), "00:00");
        assert!(err("14 pm").contains("12-hour"));
        assert!(err("0 am").contains("12-hour"));
    }

    #[test]
    fn impossible_times_are_refused() {
        assert!(err("24:00").contains("24:00 is not a time of day"));
        assert!(err("24 Uhr").contains("24:00"));
        assert!(err("25:00").contains("not a time of day"));
        assert!(err("14:60").contains("not a time of day"));
        assert!(err("14:00:30").contains("not a time we understand"));
    }

    #[test]
    fn guesses_are_refused() {
        assert!(err("9").contains("bare number"));
        assert!(err("14").contains("bare number"));
        assert!(err("14.3").contains("not a time we understand"));
        assert!(err("halb drei").contains("not a time we understand"));
        assert!(err("sechzehn Uhr").contains("not a time we understand"));
        assert!(err("1400").contains("not a time we understand"));
        assert!(err("14-15 Uhr").contains("range"));
        assert!(err("14:00/15:00").contains("range"));
        assert!(err("").contains("not a time we understand"));
        assert!(err("-14:00").contains("range"));
    }

    #[test]
    fn number_is_strict() {
        assert_eq!(number("09", 1, 2), Some(9));
        assert_eq!(number("+9", 1, 2), None);
        assert_eq!(number("123", 1, 2), None);
        assert_eq!(number("", 1, 2), None);
    }
}
