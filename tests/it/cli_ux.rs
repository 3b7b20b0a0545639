//! What a newcomer sees from the real binary: no blank line for an empty list, a config
//! error printed once, every event status in `events list --help`, no colour codes in a pipe.

use std::path::Path;
use std::process::{Command, Output};

fn askpro(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_askpro"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .env("RUST_LOG", "warn");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run askpro")
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    dir
}

#[test]
fn an_empty_list_prints_nothing_on_stdout() {
    let dir = data_dir();
    let out = askpro(dir.path(), &[], &["company", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn a_config_error_is_printed_once() {
    let dir = data_dir();
    let out = askpro(
        dir.path(),
        &[("ASKPRO_SERVER__LISTEN", "bad")],
        &["company", "list"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("invalid socket address").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn events_list_help_names_every_status() {
    let dir = data_dir();
    let out = askpro(dir.path(), &[], &["events", "list", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for status in askpro_actors::domain::EventStatus::ALL {
        assert!(help.contains(status.as_str()), "{status:?} missing: {help}");
    }
}

#[test]
fn logs_have_no_colour_codes_in_a_pipe() {
    let dir = data_dir();
    let out = askpro(dir.path(), &[("RUST_LOG", "info")], &["company", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "expected an info log line");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}
