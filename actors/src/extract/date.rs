//! Calendar dates as agents write them down, German and English: `2025-06-20`, `20.06.2025`,
//! `20.6.`, `Dienstag, den 11. November`, `June 20`, `morgen`, `nächsten Dienstag`.
//!
//! Relative words are anchored at `today`, the call's start in the branch's zone. Rules that need
//! a decision (all tested below):
//! - a day and month without a year mean the next such date on or after today, so `20.01.` said
//!   in December is next January;
//! - a two-digit year is 20xx (`20.06.25` is 2025): nobody books a slot in the 1900s;
//! - a bare weekday (`Dienstag`, `am Dienstag`, `nächsten Dienstag`, `tuesday`) is the next such
//!   day strictly after today. Said on a Tuesday, "Dienstag" is next week's Tuesday: a caller who
//!   means today says "heute", and the agent writes what it heard;
//! - a weekday next to an explicit date must agree with it, otherwise one of the two was misheard.

use chrono::{Datelike, Days, NaiveDate, Weekday};

use super::time::number;

/// Words that carry no date information of their own ("am Dienstag", "den 11.", "next tuesday").
const FILLERS: &[&str] = &[
    "am",
    "den",
    "on",
    "the",
    "of",
    "nächsten",
    "nächster",
    "naechsten",
    "naechster",
    "kommenden",
    "kommender",
    "next",
];

pub(crate) fn parse_date(raw: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let s = raw.trim().to_lowercase().replace(',', " ");
    // The only multi-word relative phrase; handled before tokens lose their order.
    if s.split_whitespace().collect::<Vec<_>>() == ["day", "after", "tomorrow"] {
        return shift(today, 2);
    }
    let mut tokens: Vec<&str> = s
        .split_whitespace()
        .filter(|t| !FILLERS.contains(t))
        .collect();
    // A leading weekday is taken out and kept to check against the date that follows.
    let said = tokens
        .first()
        .and_then(|t| weekday(t.trim_end_matches('.')))
        .map(|day| (tokens.remove(0).trim_end_matches('.'), day));
    let date = match (tokens.as_slice(), said) {
        ([], Some((_, day))) => return next_weekday(today, day),
        ([], None) => return Err(not_understood()),
        (tokens, _) => explicit(tokens, today)?,
    };
    match said {
        Some((word, day)) if date.weekday() != day => Err(format!(
            "names {word:?} but {date} is a {}",
            date.format("%A")
        )),
        _ => Ok(date),
    }
}

fn explicit(tokens: &[&str], today: NaiveDate) -> Result<NaiveDate, String> {
    match tokens {
        [one] => single(one, today),
        [_, _] | [_, _, _] => day_and_month_name(tokens, today),
        _ => Err(not_understood()),
    }
}

fn single(token: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    if let Some(days) = relative(token) {
        return shift(today, days);
    }
    if token.contains('-') {
        return iso(token);
    }
    if token.contains('.') {
        return dotted(token, today);
    }
    Err(not_understood())
}

fn relative(word: &str) -> Option<u64> {
    match word {
        "heute" | "today" => Some(0),
        "morgen" | "tomorrow" => Some(1),
        "übermorgen" | "uebermorgen" => Some(2),
        _ => None,
    }
}

/// `2025-06-20`.
fn iso(token: &str) -> Result<NaiveDate, String> {
    let parts: Vec<&str> = token.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(not_understood());
    };
    match (number(year, 4, 4), number(month, 1, 2), number(day, 1, 2)) {
        (Some(year), Some(month), Some(day)) => with_year(day, month, year as i32),
        _ => Err(not_understood()),
    }
}

/// `20.06.2025`, `20.6.25`, `20.06.`, `20.6`.
fn dotted(token: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let (day, month, year) = match parts.as_slice() {
        [day, month] | [day, month, ""] => (day, month, None),
        [day, month, year] => (day, month, Some(year_of(year)?)),
        _ => return Err(not_understood()),
    };
    match (number(day, 1, 2), number(month, 1, 2)) {
        (Some(day), Some(month)) => dated(day, month, year, today),
        _ => Err(not_understood()),
    }
}

/// `11. November`, `11 November 2026`, `June 20`, `20th June`, `November 11th 2026`.
fn day_and_month_name(tokens: &[&str], today: NaiveDate) -> Result<NaiveDate, String> {
    let (day, month) = match month(tokens[0]) {
        Some(month) => (tokens[1], month),
        None => (tokens[0], month(tokens[1]).ok_or_else(not_understood)?),
    };
    let day = day_number(day).ok_or_else(not_understood)?;
    let year = tokens.get(2).map(|y| year_of(y)).transpose()?;
    dated(day, month, year, today)
}

fn day_number(token: &str) -> Option<u32> {
    let token = token.trim_end_matches('.');
    let digits = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|suffix| token.strip_suffix(suffix))
        .unwrap_or(token);
    number(digits, 1, 2)
}

/// Four digits as written, two digits as 20xx.
fn year_of(token: &str) -> Result<i32, String> {
    let token = token.trim_end_matches('.');
    if let Some(year) = number(token, 4, 4) {
        return Ok(year as i32);
    }
    number(token, 2, 2)
        .map(|year| 2000 + year as i32)
        .ok_or_else(not_understood)
}

fn dated(day: u32, month: u32, year: Option<i32>, today: NaiveDate) -> Result<NaiveDate, String> {
    match year {
        Some(year) => with_year(day, month, year),
        None => next_occurrence(day, month, today),
    }
}

fn with_year(day: u32, month: u32, year: i32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{day}.{month}.{year} is not a calendar date"))
}

/// The first `day.month.` on or after today. Eight years always reach a 29 February.
fn next_occurrence(day: u32, month: u32, today: NaiveDate) -> Result<NaiveDate, String> {
    (today.year()..=today.year() + 8)
        .filter_map(|year| NaiveDate::from_ymd_opt(year, month, day))
        .find(|date| *date >= today)
        .ok_or_else(|| format!("{day}.{month}. is not a calendar date"))
}

/// Strictly after today: see the module comment.
fn next_weekday(today: NaiveDate, day: Weekday) -> Result<NaiveDate, String> {
    let ahead = (7 + day.num_days_from_monday() - today.weekday().num_days_from_monday()) % 7;
    let ahead = if ahead == 0 { 7 } else { ahead };
    // Checked: a signed but absurd `start_timestamp` must not panic the tenant actor.
    shift(today, u64::from(ahead))
}

fn shift(today: NaiveDate, days: u64) -> Result<NaiveDate, String> {
    today
        .checked_add_days(Days::new(days))
        .ok_or_else(|| "is beyond the calendar".to_string())
}

fn weekday(word: &str) -> Option<Weekday> {
    Some(match word {
        "montag" | "monday" => Weekday::Mon,
        "dienstag" | "tuesday" => Weekday::Tue,
        "mittwoch" | "wednesday" => Weekday::Wed,
        "donnerstag" | "thursday" => Weekday::Thu,
        "freitag" | "friday" => Weekday::Fri,
        "samstag" | "sonnabend" | "saturday" => Weekday::Sat,
        "sonntag" | "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn month(word: &str) -> Option<u32> {
    Some(match word.trim_end_matches('.') {
        "januar" | "jänner" | "jaenner" | "january" | "jan" => 1,
        "februar" | "february" | "feb" => 2,
        "märz" | "maerz" | "march" | "mär" | "mrz" | "mar" => 3,
        "april" | "apr" => 4,
        "mai" | "may" => 5,
        "juni" | "june" | "jun" => 6,
        "juli" | "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sept" | "sep" => 9,
        "oktober" | "october" | "okt" | "oct" => 10,
        "november" | "nov" => 11,
        "dezember" | "december" | "dez" | "dec" => 12,
        _ => return None,
    })
}

fn not_understood() -> String {
    "is not a date we understand".into()
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

    /// Parses `raw` as said on `today` and returns the date as ISO text.
    fn on(today: &str, raw: &str) -> String {
        match parse_date(raw, day(today)) {
            Ok(d) => d.to_string(),
            Err(e) => panic!("{raw:?} should parse, got {e}"),
        }
    }

    fn err(today: &str, raw: &str) -> String {
        match parse_date(raw, day(today)) {
            Ok(d) => panic!("{raw:?} should be refused, got {d}"),
            Err(e) => e,
        }
    }

    // 2026-06-10 is a Wednesday.
    const WED: &str = "2026-06-10";

    #[test]
    fn iso_dates() {
        assert_eq!(on(WED, "2025-06-20"), "2025-06-20");
        assert_eq!(on(WED, " 2026-7-1 "), "2026-07-01");
        assert!(err(WED, "2026-02-30").contains("not a calendar date"));
        assert!(err(WED, "26-06-20").contains("not a date we understand"));
    }

    #[test]
    fn german_numeric_dates() {
        assert_eq!(on(WED, "20.06.2026"), "2026-06-20");
        assert_eq!(on(WED, "20.6.2026"), "2026-06-20");
        assert_eq!(on(WED, "am 20.06.2026"), "2026-06-20");
        assert!(err(WED, "31.06.2026").contains("not a calendar date"));
        assert!(err(WED, "20.13.2026").contains("not a calendar date"));
        assert!(err(WED, "20.06.026").contains("not a date we understand"));
    }

    #[test]
    fn two_digit_years_are_this_century() {
        assert_eq!(on(WED, "20.06.25"), "2025-06-20");
        assert_eq!(on(WED, "01.02.27"), "2027-02-01");
        assert_eq!(on(WED, "11. November 27"), "2027-11-11");
    }

    #[test]
    fn day_and_month_mean_the_next_occurrence() {
        assert_eq!(on(WED, "20.06."), "2026-06-20");
        assert_eq!(on(WED, "20.6."), "2026-06-20");
        assert_eq!(on(WED, "20.6"), "2026-06-20");
        // today itself counts as "on or after today"
        assert_eq!(on(WED, "10.06."), "2026-06-10");
        assert_eq!(on(WED, "09.06."), "2027-06-09");
        assert_eq!(on("2026-12-15", "20.01."), "2027-01-20");
        assert_eq!(on("2026-11-25", "11. November"), "2027-11-11");
        assert_eq!(on("2026-11-05", "11. November"), "2026-11-11");
        // a leap day without a year waits for the next leap year
        assert_eq!(on(WED, "29.02."), "2028-02-29");
        assert!(err(WED, "30.02.").contains("not a calendar date"));
    }

    #[test]
    fn month_names_german_and_english() {
        assert_eq!(on(WED, "11. November"), "2026-11-11");
        assert_eq!(on(WED, "11 November"), "2026-11-11");
        assert_eq!(on(WED, "11. november 2026"), "2026-11-11");
        assert_eq!(on(WED, "3. März"), "2027-03-03");
        assert_eq!(on(WED, "3. Maerz"), "2027-03-03");
        assert_eq!(on(WED, "1. Okt."), "2026-10-01");
        assert_eq!(on(WED, "June 20"), "2026-06-20");
        assert_eq!(on(WED, "June 20, 2026"), "2026-06-20");
        assert_eq!(on(WED, "20th of June"), "2026-06-20");
        assert_eq!(on(WED, "the 1st of July"), "2026-07-01");
        assert!(err(WED, "11. Brumaire").contains("not a date we understand"));
        assert!(err(WED, "32. Mai").contains("not a calendar date"));
    }

    #[test]
    fn weekday_prefix_must_agree() {
        // 2025-11-11 is a Tuesday, as in the original system's real call.
        assert_eq!(on("2025-11-03", "Dienstag, den 11. November"), "2025-11-11");
        assert_eq!(on("2025-11-03", "Tuesday, November 11th"), "2025-11-11");
        assert_eq!(on("2025-11-03", "Dienstag 11.11.2025"), "2025-11-11");
        let problem = err("2025-11-03", "Mittwoch, den 11. November");
        assert_eq!(problem, "names \"mittwoch\" but 2025-11-11 is a Tuesday");
        // "morgen" said on Monday is a Tuesday, so this pair agrees
        assert_eq!(on("2025-11-10", "Dienstag, morgen"), "2025-11-11");
    }

    #[test]
    fn relative_words() {
        assert_eq!(on(WED, "heute"), "2026-06-10");
        assert_eq!(on(WED, "Today"), "2026-06-10");
        assert_eq!(on(WED, "morgen"), "2026-06-11");
        assert_eq!(on(WED, "Morgen"), "2026-06-11");
        assert_eq!(on(WED, "tomorrow"), "2026-06-11");
        assert_eq!(on(WED, "übermorgen"), "2026-06-12");
        assert_eq!(on(WED, "Übermorgen"), "2026-06-12");
        assert_eq!(on(WED, "uebermorgen"), "2026-06-12");
        assert_eq!(on(WED, "day after tomorrow"), "2026-06-12");
        assert_eq!(on("2026-12-31", "morgen"), "2027-01-01");
    }

    #[test]
    fn weekdays_mean_the_next_one_strictly_after_today() {
        assert_eq!(on(WED, "Donnerstag"), "2026-06-11");
        assert_eq!(on(WED, "Dienstag"), "2026-06-16");
        assert_eq!(on(WED, "am Dienstag"), "2026-06-16");
        assert_eq!(on(WED, "nächsten Dienstag"), "2026-06-16");
        assert_eq!(on(WED, "tuesday"), "2026-06-16");
        assert_eq!(on(WED, "next Tuesday"), "2026-06-16");
        assert_eq!(on(WED, "Sonntag"), "2026-06-14");
        // said on a Wednesday, "Mittwoch" is a week later, never today
        assert_eq!(on(WED, "Mittwoch"), "2026-06-17");
        assert_eq!(on(WED, "wednesday"), "2026-06-17");
    }

    #[test]
    fn unknown_forms_are_refused() {
        for raw in [
            "",
            "bald",
            "20/06/2026",
            "nächste Woche",
            "Dienstag Mittwoch",
            "1 2 3 4",
        ] {
            assert!(err(WED, raw).contains("not a date we understand"), "{raw}");
        }
    }
}
