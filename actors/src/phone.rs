//! Phone numbers in E.164. (Implementation owned by the phone helper; see tests below.)

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number {input:?} is not valid: {reason}")]
    Invalid { input: String, reason: String },
}

/// Normalizes a number to E.164, reading national formats in `default_region` (e.g. "DE").
pub fn normalize(input: &str, default_region: &str) -> Result<String, PhoneError> {
    let _ = default_region;
    Err(PhoneError::Invalid {
        input: input.to_owned(),
        reason: "not implemented".into(),
    })
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
