//! The `[store]` section (which state store) and the `[cql]` section (how to reach the CQL
//! cluster). `[cql]` is used when `store.backend = "cql"`, and by `askpro migrate`; the
//! embedded store ignores it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::cql::{self, CqlError, CqlSettings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Cql,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CqlConfig {
    pub contact_points: String,
    pub keyspace: String,
    pub replication: String,
    pub local_datacenter: String,
    pub consistency: String,
    pub serial_consistency: String,
    pub request_timeout_ms: u64,
    pub migrate_on_start: bool,
}

/// The message of a CQL setting refusal, without the CQL layer's own prefix (the config
/// error names the key instead).
fn problem(e: CqlError) -> String {
    match e {
        CqlError::Setting(message) => message,
        other => other.to_string(),
    }
}

impl CqlConfig {
    /// `contact_points` split at commas, blanks dropped.
    pub fn contact_points(&self) -> Vec<String> {
        self.contact_points
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks every key and maps the section onto the CQL store's settings.
    pub fn settings(&self) -> Result<CqlSettings, ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        let contact_points = self.contact_points();
        if contact_points.is_empty() {
            return invalid(
                "cql.contact_points",
                "must name at least one host:port".into(),
            );
        }
        for point in &contact_points {
            let port_ok = point
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_some_and(|port| port > 0);
            if !port_ok || point.contains(char::is_whitespace) {
                return invalid(
                    "cql.contact_points",
                    format!("{point:?} is not host:port (e.g. 127.0.0.1:9042)"),
                );
            }
        }
        if let Err(e) = cql::check_keyspace(&self.keyspace) {
            return invalid("cql.keyspace", problem(e));
        }
        if let Err(e) = cql::check_replication(&self.replication) {
            return invalid("cql.replication", problem(e));
        }
        let local_datacenter = self.local_datacenter.trim();
        if local_datacenter.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            return invalid(
                "cql.local_datacenter",
                format!("{local_datacenter:?} is not a datacenter name"),
            );
        }
        let consistency = match cql::parse_consistency(&self.consistency) {
            Ok(level) => level,
            Err(e) => return invalid("cql.consistency", problem(e)),
        };
        let serial_consistency = match cql::parse_serial_consistency(&self.serial_consistency) {
            Ok(level) => level,
            Err(e) => return invalid("cql.serial_consistency", problem(e)),
        };
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return invalid(
                "cql.request_timeout_ms",
                format!("must be 100..=600000, got {}", self.request_timeout_ms),
            );
        }
        let settings = CqlSettings {
            contact_points,
            keyspace: self.keyspace.clone(),
            replication: self.replication.trim().to_owned(),
            consistency,
            serial_consistency,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            migrate_on_start: self.migrate_on_start,
            local_datacenter: (!local_datacenter.is_empty()).then(|| local_datacenter.to_owned()),
        };
        // Anything the store would still refuse (the checks above should cover it all).
        if let Err(e) = settings.validate() {
            return invalid("cql", problem(e));
        }
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use figment::providers::{Format, Toml};
    use figment::Figment;
    use scylla::statement::{Consistency, SerialConsistency};

    use crate::config::{Config, Overrides, StoreBackend, DEFAULTS};

    fn cql_config() -> Config {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.store.backend = StoreBackend::Cql;
        config
    }

    fn refused_key(config: &Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_embedded_and_valid_for_cql() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        assert_eq!(config.store.backend, StoreBackend::Embedded);
        let config = cql_config();
        config.validate().unwrap();
        let settings = config.cql.settings().unwrap();
        assert_eq!(settings.contact_points, vec!["127.0.0.1:19042"]);
        assert_eq!(settings.keyspace, "askpro");
        assert_eq!(
            settings.replication,
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(settings.consistency, Consistency::LocalQuorum);
        assert_eq!(settings.serial_consistency, SerialConsistency::LocalSerial);
        assert_eq!(settings.local_datacenter, None);
        assert_eq!(settings.request_timeout, Duration::from_secs(5));
        assert!(settings.migrate_on_start);
    }

    #[test]
    fn settings_map_every_key() {
        let mut config = cql_config();
        config.cql.contact_points = " 10.0.0.1:9042, ,10.0.0.2:9042 ".into();
        config.cql.keyspace = "askpro_prod".into();
        config.cql.replication = "{'class': 'NetworkTopologyStrategy', 'dc1': 3}".into();
        config.cql.local_datacenter = " dc1 ".into();
        config.cql.consistency = "quorum".into();
        config.cql.serial_consistency = "SERIAL".into();
        config.cql.request_timeout_ms = 1500;
        config.cql.migrate_on_start = false;
        let settings = config.cql.settings().unwrap();
        assert_eq!(
            settings.contact_points,
            vec!["10.0.0.1:9042", "10.0.0.2:9042"]
        );
        assert_eq!(settings.keyspace, "askpro_prod");
        assert_eq!(settings.local_datacenter.as_deref(), Some("dc1"));
        assert_eq!(settings.consistency, Consistency::Quorum);
        assert_eq!(settings.serial_consistency, SerialConsistency::Serial);
        assert_eq!(settings.request_timeout, Duration::from_millis(1500));
        assert!(!settings.migrate_on_start);
    }

    /// A config key and how to spoil it.
    type Case = (&'static str, fn(&mut Config));

    #[test]
    fn bad_values_are_refused_by_key() {
        let cases: [Case; 9] = [
            ("cql.contact_points", |c| {
                c.cql.contact_points = " , ".into()
            }),
            ("cql.contact_points", |c| {
                c.cql.contact_points = "10.0.0.1".into()
            }),
            ("cql.contact_points", |c| {
                c.cql.contact_points = "a:9042,b:notaport".into()
            }),
            ("cql.keyspace", |c| c.cql.keyspace = "Ask-Pro".into()),
            ("cql.keyspace", |c| {
                c.cql.keyspace = "x; DROP KEYSPACE y".into()
            }),
            ("cql.replication", |c| {
                c.cql.replication = "{'class': 'x'}; DROP TABLE t".into()
            }),
            ("cql.consistency", |c| {
                c.cql.consistency = "local_serial".into()
            }),
            ("cql.serial_consistency", |c| {
                c.cql.serial_consistency = "quorum".into()
            }),
            ("cql.request_timeout_ms", |c| c.cql.request_timeout_ms = 0),
        ];
        for (key, spoil) in cases {
            let mut config = cql_config();
            spoil(&mut config);
            let err = refused_key(&config);
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut config = cql_config();
        config.cql.consistency = "lokal_quorum".into();
        let err = refused_key(&config);
        assert!(err.contains("lokal_quorum"), "{err}");
    }

    #[test]
    fn the_embedded_store_ignores_the_cql_section() {
        let mut config = cql_config();
        config.store.backend = StoreBackend::Embedded;
        config.cql.contact_points = String::new();
        config.cql.consistency = "nonsense".into();
        config.validate().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature, not ours
    fn env_selects_the_cql_store() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ASKPRO_STORE__BACKEND", "cql");
            jail.set_env(
                "ASKPRO_CQL__CONTACT_POINTS",
                "127.0.0.1:29042,127.0.0.2:29042",
            );
            jail.set_env("ASKPRO_CQL__KEYSPACE", "askpro_it_1");
            jail.set_env(
                "ASKPRO_CQL__REPLICATION",
                "{'class': 'NetworkTopologyStrategy', 'dc1': 3}",
            );
            jail.set_env("ASKPRO_CQL__MIGRATE_ON_START", "false");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.store.backend, StoreBackend::Cql);
            let settings = config.cql.settings().unwrap();
            assert_eq!(
                settings.contact_points,
                vec!["127.0.0.1:29042", "127.0.0.2:29042"]
            );
            assert_eq!(settings.keyspace, "askpro_it_1");
            assert_eq!(
                settings.replication,
                "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
            );
            assert!(!settings.migrate_on_start);
            jail.set_env("ASKPRO_CQL__CONSISTENCY", "bogus");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("cql.consistency"), "{err}");
            Ok(())
        });
    }
}
