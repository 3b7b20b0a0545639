//! Settings of the CQL store: a plain struct, filled from the layered config by the caller.

use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};

use super::CqlError;

/// Where the CQL cluster is and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub struct CqlSettings {
    /// `host:port` of one or more nodes; the driver discovers the rest of the cluster.
    pub contact_points: Vec<String>,
    /// The keyspace holding every table (`[a-z_][a-z0-9_]*`, at most 48 characters).
    pub keyspace: String,
    /// The replication map used when the migrator creates the keyspace, as CQL, e.g.
    /// `{'class': 'SimpleStrategy', 'replication_factor': 1}` (development) or
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}` (production). An existing keyspace
    /// is left as it is.
    pub replication: String,
    /// Of reads and writes; `LOCAL_QUORUM` by default.
    pub consistency: Consistency,
    /// Of the Paxos round of conditional writes (LWT) and of serial reads; `LOCAL_SERIAL`
    /// by default.
    pub serial_consistency: SerialConsistency,
    /// Client-side limit of one request (retries included); past it the store answers
    /// `StoreError::Unavailable`.
    pub request_timeout: Duration,
    /// Apply `schemas/cql/` at open (otherwise `askpro migrate` must have run).
    pub migrate_on_start: bool,
    /// The datacenter whose nodes coordinate requests (and that LOCAL_* consistencies mean).
    /// `None` is fine for one datacenter; with several, set it (e.g. `dc1`).
    pub local_datacenter: Option<String>,
}

impl Default for CqlSettings {
    fn default() -> Self {
        CqlSettings {
            contact_points: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "askpro".to_owned(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_owned(),
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            request_timeout: Duration::from_secs(5),
            migrate_on_start: false,
            local_datacenter: None,
        }
    }
}

impl CqlSettings {
    /// Checks what is later spliced into DDL (the keyspace name and the replication map
    /// cannot be bind markers) and the rest for plain mistakes.
    pub fn validate(&self) -> Result<(), CqlError> {
        if self.contact_points.is_empty() {
            return Err(CqlError::Setting(
                "contact_points is empty (expected host:port of at least one node)".into(),
            ));
        }
        check_keyspace(&self.keyspace)?;
        check_replication(&self.replication)?;
        if self.request_timeout.is_zero() {
            return Err(CqlError::Setting("request_timeout must be above 0".into()));
        }
        if matches!(
            self.consistency,
            Consistency::Serial | Consistency::LocalSerial | Consistency::Any
        ) {
            return Err(CqlError::Setting(format!(
                "consistency {} is not usable for plain reads and writes",
                self.consistency
            )));
        }
        Ok(())
    }
}

/// A keyspace name the migrator may splice into `CREATE KEYSPACE` and `USE`.
pub fn check_keyspace(name: &str) -> Result<(), CqlError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 48 {
        return Err(CqlError::Setting(format!(
            "keyspace {name:?} is not a valid name (expected [a-z_][a-z0-9_]*, at most 48 characters)"
        )));
    }
    Ok(())
}

/// A replication map literal: `{...}` with quoted keys and values only, no statement breaks.
pub fn check_replication(map: &str) -> Result<(), CqlError> {
    let trimmed = map.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || " '_:,.-".contains(c);
    let body_ok = trimmed
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .is_some_and(|body| body.contains("'class'") && body.chars().all(allowed));
    if !body_ok {
        return Err(CqlError::Setting(format!(
            "replication {map:?} is not a replication map (expected e.g. \
             {{'class': 'SimpleStrategy', 'replication_factor': 1}})"
        )));
    }
    Ok(())
}

/// Parses a consistency level as written in config (`local_quorum`, `QUORUM`, `one`, ...).
pub fn parse_consistency(text: &str) -> Result<Consistency, CqlError> {
    let level = match text.trim().to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        other => {
            return Err(CqlError::Setting(format!(
                "unknown consistency {other:?} (expected one, two, three, quorum, all, \
                 local_quorum, each_quorum or local_one)"
            )))
        }
    };
    Ok(level)
}

/// Parses a serial consistency level (`local_serial` or `serial`).
pub fn parse_serial_consistency(text: &str) -> Result<SerialConsistency, CqlError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "serial" => Ok(SerialConsistency::Serial),
        "local_serial" => Ok(SerialConsistency::LocalSerial),
        other => Err(CqlError::Setting(format!(
            "unknown serial consistency {other:?} (expected local_serial or serial)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        CqlSettings::default().validate().unwrap();
    }

    #[test]
    fn keyspace_and_replication_are_checked() {
        for bad in ["", "Askpro", "1x", "a-b", "x; DROP KEYSPACE y"] {
            assert!(check_keyspace(bad).is_err(), "{bad}");
        }
        check_keyspace("askpro_it_1").unwrap();
        let nts = "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc-2': 3}";
        check_replication(nts).unwrap();
        for bad in ["", "{}", "{'class': 'x'}; DROP TABLE t", "'class': 'x'"] {
            assert!(check_replication(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn consistency_levels_parse() {
        assert_eq!(
            parse_consistency("LOCAL_QUORUM").unwrap(),
            Consistency::LocalQuorum
        );
        assert!(parse_consistency("serial").is_err());
        assert_eq!(
            parse_serial_consistency("serial").unwrap(),
            SerialConsistency::Serial
        );
    }
}
