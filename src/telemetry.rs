//! Logging setup: lowercase messages with structured fields, text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber once; `RUST_LOG` overrides the configured level.
/// `quiet` (admin commands) lowers the default to warnings.
pub fn init(config: &TelemetryConfig, quiet: bool) {
    let level = if quiet {
        "warn"
    } else {
        config.log_level.as_str()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in files, pipes and CI logs.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
