//! Phone numbers in E.164.
//!
//! Callers, agents and staff write numbers in every shape: `030/1234567`, `0171-1234567`,
//! `0049 30 1234567`, `+49 (0)30 1234567`. We reduce the input to its digits (keeping a
//! leading `+`), drop the `(0)` trunk-prefix notation that follows a country code, let the
//! `phonenumber` crate (libphonenumber metadata) read it in the tenant's region, and accept it
//! only when that metadata calls it a valid number. Letters are refused instead of being read
//! as a vanity number (`0800-FLOWERS`), since for us they almost always mean a transcription
//! error.

use std::str::FromStr;

use phonenumber::{country, Mode, ParseError};

/// Longest input we look at; anything longer is not a phone number.
const MAX_INPUT_CHARS: usize = 64;
/// Fewer digits than this cannot be a number anywhere (the shortest national numbers have 4).
const MIN_DIGITS: usize = 4;

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number {input:?} is not valid: {reason}")]
    Invalid { input: String, reason: String },
    #[error(
        "default region {region:?} is not a known ISO 3166-1 alpha-2 region (expected e.g. \"DE\")"
    )]
    UnknownRegion { region: String },
}

fn invalid(input: &str, reason: impl Into<String>) -> PhoneError {
    PhoneError::Invalid {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Normalizes a number to E.164, reading national formats in `default_region` (e.g. "DE").
pub fn normalize(input: &str, default_region: &str) -> Result<String, PhoneError> {
    let region =
        country::Id::from_str(&default_region.trim().to_ascii_uppercase()).map_err(|_| {
            PhoneError::UnknownRegion {
                region: default_region.to_owned(),
            }
        })?;
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    if trimmed.chars().count() > MAX_INPUT_CHARS {
        return Err(invalid(
            input,
            format!("longer than {MAX_INPUT_CHARS} characters"),
        ));
    }
    let cleaned = clean(input, trimmed)?;
    let number = phonenumber::parse(Some(region), &cleaned)
        .map_err(|e| invalid(input, parse_reason(&e, &cleaned)))?;
    if !number.is_valid() {
        let code = number.code().value();
        // No region means no numbering plan under this code accepts the number; the code
        // itself may still be real (+1 is shared by many regions).
        let reason = if number.country().id().is_none() {
            format!(
                "+{code} {} matches no numbering plan of country code +{code}",
                number.national()
            )
        } else {
            format!(
                "+{code} {} is not a valid number (wrong length or unassigned range)",
                number.national()
            )
        };
        return Err(invalid(input, reason));
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// Reduces `trimmed` to an optional leading `+` followed by digits.
fn clean(input: &str, trimmed: &str) -> Result<String, PhoneError> {
    // Characters we accept as separators; anything else (letters, `#`, `*`, ...) is refused.
    let is_separator = |c: char| c.is_whitespace() || matches!(c, '-' | '.' | '/' | '(' | ')');
    if let Some(bad) = trimmed
        .chars()
        .find(|&c| !(c.is_ascii_digit() || c == '+' || is_separator(c)))
    {
        let what = if bad.is_alphabetic() {
            "letter"
        } else {
            "character"
        };
        return Err(invalid(
            input,
            format!("contains the {what} {bad:?} (only digits, a leading '+' and the separators space - . / ( ) are allowed)"),
        ));
    }
    let plus = trimmed.starts_with('+');
    if trimmed[usize::from(plus)..].contains('+') {
        return Err(invalid(input, "'+' is only allowed at the start"));
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    let digits_only: String = compact.chars().filter(char::is_ascii_digit).collect();
    // `+49 (0)30 ...` / `0049 (0)30 ...`: after a country code, "(0)" is the national trunk
    // prefix a caller would dial at home; it is not part of the international number.
    let international = plus || digits_only.starts_with("00");
    let compact = if international {
        compact.replace("(0)", "")
    } else {
        compact
    };
    let digits: String = compact.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0 => return Err(invalid(input, "contains no digits")),
        n @ 1..MIN_DIGITS => {
            return Err(invalid(
                input,
                format!("only {n} digit(s): too few digits to be a phone number"),
            ))
        }
        _ => {}
    }
    Ok(if plus { format!("+{digits}") } else { digits })
}

fn parse_reason(err: &ParseError, cleaned: &str) -> String {
    match err {
        ParseError::NoNumber => format!("{cleaned:?} has too few digits to be a phone number"),
        ParseError::InvalidCountryCode => {
            format!("{cleaned:?} does not start with a known country calling code")
        }
        ParseError::TooShortAfterIdd => {
            "too few digits after the international prefix 00".to_owned()
        }
        ParseError::TooShortNsn => "too few digits after the country code".to_owned(),
        ParseError::TooLong => "too many digits for a phone number".to_owned(),
        other => format!("cannot be parsed: {other}"),
    }
}

/// A caller's number as Retell reports it: `anonymous` (or empty) means no number.
pub fn normalize_caller(
    input: Option<&str>,
    default_region: &str,
) -> Result<Option<String>, PhoneError> {
    match input.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.eq_ignore_ascii_case("anonymous") => Ok(None),
        Some(s) => normalize(s, default_region).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(e164)` or `Err(fragment that must appear in the error message)`.
    type Expect = Result<&'static str, &'static str>;

    const CASES: &[(&str, &str, Expect)] = &[
        // German international forms, including the `0049` form the original design broke.
        ("0049 30 1234567", "DE", Ok("+49301234567")),
        ("+49 (0)30 1234567", "DE", Ok("+49301234567")),
        ("+49(0)30-1234567", "DE", Ok("+49301234567")),
        ("0049 (0)30 1234567", "DE", Ok("+49301234567")),
        ("+49 30 1234567", "DE", Ok("+49301234567")),
        ("+49 30 12345678", "DE", Ok("+493012345678")),
        ("+49 171 1234567", "DE", Ok("+491711234567")),
        ("00491711234567", "DE", Ok("+491711234567")),
        ("+491711234567", "AT", Ok("+491711234567")),
        // German national forms with every separator.
        ("030/1234567", "DE", Ok("+49301234567")),
        ("030 1234567", "DE", Ok("+49301234567")),
        ("(030) 1234567", "DE", Ok("+49301234567")),
        ("030.123.45.67", "DE", Ok("+49301234567")),
        ("0171-1234567", "DE", Ok("+491711234567")),
        ("0171 / 123 45 67", "DE", Ok("+491711234567")),
        ("0151 12345678", "DE", Ok("+4915112345678")),
        ("089 12345678", "de", Ok("+498912345678")),
        ("  0171-1234567  ", "DE", Ok("+491711234567")),
        // Austria.
        ("+43 1 5123456", "DE", Ok("+4315123456")),
        ("0043 1 5123456", "DE", Ok("+4315123456")),
        ("01 5123456", "AT", Ok("+4315123456")),
        ("0664 1234567", "AT", Ok("+436641234567")),
        // Switzerland.
        ("+41 44 668 18 00", "DE", Ok("+41446681800")),
        ("0041 44 668 18 00", "DE", Ok("+41446681800")),
        ("044 668 18 00", "CH", Ok("+41446681800")),
        // USA.
        ("+1 212 555 0123", "DE", Ok("+12125550123")),
        ("(212) 555-0123", "US", Ok("+12125550123")),
        // Invalid input.
        ("", "DE", Err("empty")),
        ("   ", "DE", Err("empty")),
        ("anonymous", "DE", Err("letter 'a'")),
        ("0800-FLOWERS", "DE", Err("letter 'F'")),
        ("030 1234567 ext 5", "DE", Err("letter 'e'")),
        ("12", "DE", Err("too few digits")),
        ("030 12", "DE", Err("not a valid number")),
        ("+49 30 1", "DE", Err("+49 301 is not a valid number")),
        ("+999 1234567", "DE", Err("country calling code")),
        ("+49 171 12345678901234", "DE", Err("not a valid number")),
        (
            "49+301234567",
            "DE",
            Err("'+' is only allowed at the start"),
        ),
        ("030#1234567", "DE", Err("character '#'")),
        ("---", "DE", Err("no digits")),
        ("030 1234567", "XX", Err("default region \"XX\"")),
    ];

    #[test]
    fn normalize_table() {
        let mut failures = Vec::new();
        for (input, region, expect) in CASES {
            let got = normalize(input, region);
            let ok = match (expect, &got) {
                (Ok(want), Ok(have)) => want == have,
                (Err(fragment), Err(e)) => e.to_string().contains(fragment),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{input:?} in {region}: expected {expect:?}, got {got:?}"
                ));
            }
        }
        assert!(CASES.len() >= 30, "the table must keep at least 30 cases");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn invalid_names_input_and_reason() {
        let err = normalize("+49 30 1", "DE").unwrap_err();
        match &err {
            PhoneError::Invalid { input, reason } => {
                assert_eq!(input, "+49 30 1");
                assert!(!reason.is_empty());
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("+49 30 1") && msg.contains("not valid"),
            "{msg}"
        );
    }

    #[test]
    fn callers() {
        assert_eq!(normalize_caller(Some("anonymous"), "DE"), Ok(None));
        assert_eq!(normalize_caller(Some(" Anonymous "), "DE"), Ok(None));
        assert_eq!(normalize_caller(None, "DE"), Ok(None));
        assert_eq!(normalize_caller(Some(""), "DE"), Ok(None));
        assert_eq!(
            normalize_caller(Some("+49 171 1234567"), "DE"),
            Ok(Some("+491711234567".to_owned()))
        );
        assert!(normalize_caller(Some("0151123456x"), "DE").is_err());
    }
}
