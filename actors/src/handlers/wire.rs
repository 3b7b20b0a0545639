//! Reading provider bodies into the worker's types: errors that name the field, and numbers
//! read the way JSON Schema counts them (`1000.0` is an integer there, so it is one here too),
//! within the bounds the schemas state.

use serde::{Deserialize, Deserializer};

use crate::timestamp;

/// Deserializes `T` from `json`; the error names the path of the offending field.
pub(super) fn read<'de, T: Deserialize<'de>>(json: &'de serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "." | "" => inner.to_string(),
            _ => format!("{path}: {inner}"),
        }
    })
}

/// An integral JSON number (`7`, `7.0`) within `min..=max`, or null/absent.
fn bounded<'de, D: Deserializer<'de>>(
    deserializer: D,
    min: i64,
    max: i64,
) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    // Both bounds are below 2^53, so an integral f64 inside them converts exactly.
    let value = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= min as f64 && *f <= max as f64)
            .map(|f| f as i64)
    });
    match value {
        Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not an integer between {min} and {max}"
        ))),
    }
}

/// Milliseconds since the epoch, years 1970 to 9999.
pub(super) fn timestamp_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    bounded(d, timestamp::MIN_MS, timestamp::MAX_MS)
}

/// A non-negative duration in milliseconds.
pub(super) fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    bounded(d, 0, timestamp::MAX_SAFE_INTEGER)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::timestamp_ms")]
        at: Option<i64>,
    }

    fn at(value: serde_json::Value) -> Result<Option<i64>, String> {
        super::read::<T>(&json!({ "at": value })).map(|t| t.at)
    }

    #[test]
    fn integers_as_json_schema_counts_them() {
        assert_eq!(at(json!(1000)), Ok(Some(1000)));
        assert_eq!(at(json!(1000.0)), Ok(Some(1000)));
        assert_eq!(at(json!(null)), Ok(None));
        assert_eq!(super::read::<T>(&json!({})).unwrap().at, None);
        for bad in [
            json!(1000.5),
            json!(-1),
            json!(u64::MAX),
            json!(1e300),
            json!("1"),
        ] {
            let err = at(bad.clone()).unwrap_err();
            assert!(err.starts_with("at: "), "{bad}: {err}");
        }
    }
}
