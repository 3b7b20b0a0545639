//! Printing: one JSON document with `--json`, readable text otherwise.
//!
//! Every command prints through here, so a closed stdout (`askpro events list | head -1`:
//! the reader went away) ends the command quietly instead of panicking like `println!`.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;

/// The reader of stdout went away (EPIPE). Not a failure of the command: `main` exits 0,
/// as `head` asked for no more, and a shell pipeline under `pipefail` should not fail for it.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Whether `error` means that stdout was closed (see [`StdoutClosed`]).
pub fn stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<StdoutClosed>())
}

/// Writes `text` to stdout and flushes it; EPIPE becomes [`StdoutClosed`].
pub fn print(text: impl Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match write!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// [`print`] with a newline.
pub fn println(text: impl Display) -> Result<()> {
    print(format_args!("{text}\n"))
}

/// Prints `value` as pretty JSON, or the human rendering.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println(serde_json::to_string_pretty(value)?)
    } else {
        // An empty list renders as nothing: print nothing, not a blank line.
        let text = human(value);
        match text.is_empty() {
            true => Ok(()),
            false => println(text),
        }
    }
}

pub fn config(config: &Config, json: bool) -> Result<()> {
    let shown = config.redacted();
    if json {
        println(serde_json::to_string_pretty(&shown)?)
    } else {
        print(toml::to_string(&shown)?)
    }
}
