//! Printing: one JSON document with `--json`, readable text otherwise.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;

/// Prints `value` as pretty JSON, or the human rendering.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

pub fn config(config: &Config, json: bool) -> Result<()> {
    let shown = config.redacted();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", toml::to_string(&shown)?);
    }
    Ok(())
}
