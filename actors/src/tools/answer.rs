//! What a tool says back: the alternatives offered and the German sentence the agent speaks.
//! Pure functions, so the wording and the choice of alternatives are tested without I/O.

use chrono::{DateTime, Datelike, NaiveTime, SecondsFormat, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::extract::spoken::{SpokenSlot, SpokenTime, Unclear};

/// At most this many alternatives are offered: more is too much to listen to.
pub const MAX_ALTERNATIVES: usize = 3;

/// What the caller asked for, resolved against the free slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// The exact start asked for, or the start of the period or day.
    pub requested: DateTime<Utc>,
    /// Whether the exact start (or, for a period or a day, some start in it) is free.
    pub available: bool,
    /// Free starts to offer, nearest to `requested` first.
    pub alternatives: Vec<DateTime<Utc>>,
}

/// The instant a spoken slot stands for (its first moment for a period or a whole day); `None`
/// when the wall-clock time does not exist in `zone` (a DST gap).
pub fn requested_instant(slot: &SpokenSlot, zone: Tz) -> Option<DateTime<Utc>> {
    let time = match slot.time {
        SpokenTime::Exact(at) => at,
        SpokenTime::Period(period) => NaiveTime::from_hms_opt(period.hours().0, 0, 0)?,
        SpokenTime::AnyTime => NaiveTime::MIN,
    };
    slot.date
        .and_time(time)
        .and_local_timezone(zone)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

/// Whether the free `slots` hold what the caller asked for, and which others to offer.
/// `not_before` (the call's start) keeps the past out of the alternatives.
pub fn resolve(
    slot: &SpokenSlot,
    requested: DateTime<Utc>,
    free: &[DateTime<Utc>],
    zone: Tz,
    not_before: DateTime<Utc>,
) -> Availability {
    let on_day = |at: &DateTime<Utc>| at.with_timezone(&zone).date_naive() == slot.date;
    let fits = |at: &DateTime<Utc>| match slot.time {
        SpokenTime::Exact(_) => *at == requested,
        SpokenTime::Period(period) => {
            let (from, to) = period.hours();
            on_day(at) && (from..to).contains(&at.with_timezone(&zone).hour())
        }
        SpokenTime::AnyTime => on_day(at),
    };
    let future: Vec<DateTime<Utc>> = free
        .iter()
        .copied()
        .filter(|at| *at >= not_before)
        .collect();
    let matching: Vec<DateTime<Utc>> = future.iter().copied().filter(fits).collect();
    let available = !matching.is_empty();
    let alternatives = match slot.time {
        // A free exact start needs no alternatives; a taken one gets the nearest others.
        SpokenTime::Exact(_) if available => Vec::new(),
        SpokenTime::Exact(_) => nearest(&future, requested),
        // A period or a day: its own free starts in order, else the nearest elsewhere.
        _ if available => matching.into_iter().take(MAX_ALTERNATIVES).collect(),
        _ => nearest(&future, requested),
    };
    Availability {
        requested,
        available,
        alternatives,
    }
}

fn nearest(free: &[DateTime<Utc>], to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut sorted: Vec<DateTime<Utc>> = free.iter().copied().filter(|at| *at != to).collect();
    // Ties (as far before as after) go to the earlier one.
    sorted.sort_by_key(|at| ((*at - to).num_seconds().abs(), *at));
    sorted.truncate(MAX_ALTERNATIVES);
    sorted
}

/// ISO 8601 with the branch's offset, e.g. `2026-12-08T14:00:00+01:00`.
pub fn iso(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `Dienstag, 8. Dezember um 14:30 Uhr`.
pub fn spoken(at: DateTime<Utc>, zone: Tz) -> String {
    let local = at.with_timezone(&zone);
    format!(
        "{} um {}",
        spoken_day(local.date_naive()),
        spoken_time(local.time())
    )
}

fn spoken_day(date: chrono::NaiveDate) -> String {
    const MONTHS: [&str; 12] = [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ];
    let weekday = match date.weekday() {
        Weekday::Mon => "Montag",
        Weekday::Tue => "Dienstag",
        Weekday::Wed => "Mittwoch",
        Weekday::Thu => "Donnerstag",
        Weekday::Fri => "Freitag",
        Weekday::Sat => "Samstag",
        Weekday::Sun => "Sonntag",
    };
    let month = MONTHS.get(date.month0() as usize).copied().unwrap_or("");
    format!("{weekday}, {}. {month}", date.day())
}

fn spoken_time(time: NaiveTime) -> String {
    format!("{}:{:02} Uhr", time.hour(), time.minute())
}

fn listed(alternatives: &[DateTime<Utc>], zone: Tz) -> String {
    let spoken: Vec<String> = alternatives.iter().map(|at| spoken(*at, zone)).collect();
    match spoken.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} oder {last}", init.join(", ")),
    }
}

/// What was asked for, in words: a time, a part of a day or a day.
fn asked(slot: &SpokenSlot, requested: DateTime<Utc>, zone: Tz) -> String {
    match slot.time {
        SpokenTime::Exact(_) => format!("am {}", spoken(requested, zone)),
        SpokenTime::Period(period) => format!("am {} {}", spoken_day(slot.date), period.german()),
        SpokenTime::AnyTime => format!("am {}", spoken_day(slot.date)),
    }
}

/// `check_availability`'s answer.
pub fn availability(slot: &SpokenSlot, found: &Availability, zone: Tz) -> Value {
    let asked = asked(slot, found.requested, zone);
    let message = match (found.available, &slot.time, found.alternatives.as_slice()) {
        (true, SpokenTime::Exact(_), _) => format!("Der Termin {asked} ist frei."),
        (true, _, alts) => format!(
            "{asked} ist etwas frei, zum Beispiel {}.",
            listed(alts, zone)
        ),
        (false, _, []) => {
            format!("{asked} ist leider nichts frei, und in den Tagen danach auch nicht.")
        }
        (false, _, alts) => format!(
            "{asked} ist leider nichts frei. Möglich wäre {}.",
            listed(alts, zone)
        ),
    };
    json!({
        "available": found.available,
        "requested": iso(found.requested, zone),
        "alternatives": found.alternatives.iter().map(|at| iso(*at, zone)).collect::<Vec<_>>(),
        "message": capitalised(&message),
    })
}

/// An argument we could not read: no guess, the agent asks again.
pub fn repeat(tool_result: &str, unclear: &Unclear) -> Value {
    let what = match unclear.field {
        "date" if unclear.problem.contains("no year") => {
            "Bitte wiederholen Sie das Datum mit Tag, Monat und Jahr, oder sagen Sie zum Beispiel morgen oder Dienstag."
        }
        "date" if unclear.problem.contains("past") => {
            "Dieses Datum liegt in der Vergangenheit. Bitte wiederholen Sie das gewünschte Datum."
        }
        "date" => "Das Datum habe ich nicht verstanden. Bitte wiederholen Sie es, zum Beispiel 8. Dezember 2026, morgen oder Dienstag.",
        "time" if unclear.problem.contains("past") => {
            "Diese Uhrzeit ist heute schon vorbei. Bitte nennen Sie eine andere Uhrzeit."
        }
        "time" => "Die Uhrzeit habe ich nicht verstanden. Bitte wiederholen Sie sie, zum Beispiel 14 Uhr oder vormittags.",
        "phone" => "Bitte nennen Sie eine Telefonnummer oder E-Mail-Adresse, unter der wir Sie erreichen.",
        _ => "Bitte wiederholen Sie Ihre Angaben.",
    };
    json!({
        tool_result: false,
        "repeat": unclear.field,
        "problem": unclear.to_string(),
        "alternatives": [],
        "message": what,
    })
}

/// `book_appointment` succeeded (or had already).
pub fn booked(appointment_id: uuid::Uuid, start: DateTime<Utc>, zone: Tz) -> Value {
    json!({
        "booked": true,
        "appointment_id": appointment_id,
        "start": iso(start, zone),
        "message": format!("Ihr Termin am {} ist gebucht.", spoken(start, zone)),
    })
}

/// The slot went to someone else: offer others.
pub fn taken(requested: DateTime<Utc>, alternatives: &[DateTime<Utc>], zone: Tz) -> Value {
    let message = match alternatives {
        [] => format!(
            "Der Termin am {} ist leider schon vergeben, und in den Tagen danach ist nichts frei.",
            spoken(requested, zone)
        ),
        alts => format!(
            "Der Termin am {} ist leider schon vergeben. Möglich wäre {}.",
            spoken(requested, zone),
            listed(alts, zone)
        ),
    };
    json!({
        "booked": false,
        "alternatives": alternatives.iter().map(|at| iso(*at, zone)).collect::<Vec<_>>(),
        "message": message,
    })
}

/// The booking is stored and will be made, but is not confirmed yet (Cal.com slow or down).
pub fn pending_booking(
    appointment_id: Option<uuid::Uuid>,
    start: Option<DateTime<Utc>>,
    zone: Tz,
) -> Value {
    json!({
        "booked": false,
        "pending": true,
        "appointment_id": appointment_id,
        "start": start.map(|at| iso(at, zone)),
        "message": "Ich habe Ihren Terminwunsch aufgenommen. Der Kalender bestätigt ihn gerade nicht sofort; Sie erhalten die Bestätigung, sobald er gebucht ist.",
    })
}

/// The calendar did not answer in time for a check.
pub fn pending_check() -> Value {
    json!({
        "available": false,
        "pending": true,
        "alternatives": [],
        "message": "Der Kalender antwortet gerade nicht. Ich kann Ihren Wunschtermin trotzdem aufnehmen.",
    })
}

/// Something on our side is missing or broken (no calendar connected, store down).
pub fn unavailable(tool_result: &str, reason: &str) -> Value {
    json!({
        tool_result: false,
        "alternatives": [],
        "error": reason,
        "message": "Die Terminbuchung ist gerade nicht möglich. Ich notiere Ihren Wunsch, und wir melden uns bei Ihnen.",
    })
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::spoken::Period;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn slot(time: SpokenTime) -> SpokenSlot {
        SpokenSlot {
            date: "2026-12-08".parse().unwrap(),
            time,
        }
    }

    /// Tuesday 2026-12-08, Berlin is UTC+1: 09:00, 09:30, 13:00, 13:30 and 16:00 local free.
    fn free() -> Vec<DateTime<Utc>> {
        ["08:00", "08:30", "12:00", "12:30", "15:00"]
            .iter()
            .map(|t| at(&format!("2026-12-08T{t}:00Z")))
            .collect()
    }

    #[test]
    fn a_taken_exact_time_offers_the_nearest_three() {
        let s = slot(SpokenTime::Exact(
            NaiveTime::from_hms_opt(13, 15, 0).unwrap(),
        ));
        let requested = requested_instant(&s, BERLIN).unwrap();
        let found = resolve(&s, requested, &free(), BERLIN, at("2026-12-05T09:00:00Z"));
        assert!(!found.available);
        assert_eq!(
            found.alternatives,
            vec![
                at("2026-12-08T12:00:00Z"),
                at("2026-12-08T12:30:00Z"),
                at("2026-12-08T15:00:00Z")
            ]
        );
        let answer = availability(&s, &found, BERLIN);
        assert_eq!(answer["requested"], "2026-12-08T13:15:00+01:00");
        assert_eq!(answer["alternatives"][0], "2026-12-08T13:00:00+01:00");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with("Am Dienstag, 8. Dezember um 13:15 Uhr ist leider nichts frei."),
            "{message}"
        );
        assert!(
            message.contains("13:00 Uhr, Dienstag, 8. Dezember um 13:30 Uhr oder"),
            "{message}"
        );
    }

    #[test]
    fn a_free_exact_time_and_a_period() {
        let s = slot(SpokenTime::Exact(
            NaiveTime::from_hms_opt(9, 30, 0).unwrap(),
        ));
        let requested = requested_instant(&s, BERLIN).unwrap();
        let found = resolve(&s, requested, &free(), BERLIN, at("2026-12-05T09:00:00Z"));
        assert!(found.available && found.alternatives.is_empty());
        let answer = availability(&s, &found, BERLIN);
        assert_eq!(
            answer["message"],
            "Der Termin am Dienstag, 8. Dezember um 9:30 Uhr ist frei."
        );

        let s = slot(SpokenTime::Period(Period::Afternoon));
        let requested = requested_instant(&s, BERLIN).unwrap();
        let found = resolve(&s, requested, &free(), BERLIN, at("2026-12-05T09:00:00Z"));
        assert!(found.available);
        assert_eq!(found.alternatives, free()[2..].to_vec());
    }
}
