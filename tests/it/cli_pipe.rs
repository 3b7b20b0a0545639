//! `askpro ... | head -1`: a CLI whose stdout is closed by its reader exits quietly (0, no
//! panic message), whatever the command prints.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs the binary with stdout on a pipe whose read end is already closed, so its first
/// write gets EPIPE (deterministic, unlike racing a real `head`). Returns (success, stderr).
fn run_with_closed_stdout(dir: &Path, args: &[&str]) -> (bool, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .expect("run askpro");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 6] = [
        &["events", "list"],
        &["events", "list", "--json"],
        &["company", "list"],
        &["company", "create", "--name", "Salon", "--json"],
        &["config", "show"],
        &["config", "show", "--json"],
    ];
    for args in commands {
        let (success, stderr) = run_with_closed_stdout(tmp.path(), args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "askpro {args:?} on a closed stdout: {stderr}"
        );
        assert!(success, "askpro {args:?} should exit 0: {stderr}");
    }
}
