//! Cross-check of our Retell signatures against the official Python SDK (`retell-sdk`,
//! `retell.lib.webhook_auth`), driven through `tests/sdk/retell_crosscheck.py`.
//!
//! Python is `$ASKPRO_PYTHON`, else `$HOME/.cache/askpro/venv/bin/python` when it exists,
//! else `python3`. If that interpreter cannot `import retell`, these tests FAIL (they never
//! skip): run `scripts/test`, which installs the venv from `tests/sdk/requirements.txt`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use askpro::signature::{
    sign_retell, verify_retell, SecretRef, SignatureError, RETELL_TOLERANCE_MS,
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/sdk/retell_crosscheck.py"
);
const CALL_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/retell_call_object_get-call_call_a3d98bb4522f6f1e0bfac5964b1.json"
);

const OLD: SecretRef<'static> = SecretRef {
    id: "sec_2025",
    value: "key_ret_0ld_secret",
};
const NEW: SecretRef<'static> = SecretRef {
    id: "sec_2026",
    value: "key_ret_n3w_secret",
};

fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ASKPRO_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/askpro/venv/bin/python");
        if venv.exists() {
            return venv;
        }
    }
    PathBuf::from("python3")
}

/// The interpreter, after checking once that it can import the SDK; panics otherwise.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = python_path();
        let out = Command::new(&python)
            .args(["-c", "import retell.lib.webhook_auth"])
            .output();
        match out {
            Ok(out) if out.status.success() => python,
            Ok(out) => panic!(
                "{} cannot import the Retell SDK (retell-sdk): {}\nrun scripts/test (it installs \
                 the venv from tests/sdk/requirements.txt) or set ASKPRO_PYTHON to a python \
                 that has retell-sdk",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run python {}: {e}\nrun scripts/test (it installs the venv) or set \
                 ASKPRO_PYTHON",
                python.display()
            ),
        }
    })
}

fn sdk(args: &[&str]) -> Output {
    let out = Command::new(python())
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run retell_crosscheck.py");
    if !matches!(out.status.code(), Some(0 | 1)) {
        panic!(
            "retell_crosscheck.py {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn body_file(body: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(body).expect("write body");
    f
}

fn sdk_sign(key: &str, body: &[u8], timestamp_ms: i64) -> String {
    let file = body_file(body);
    let out = sdk(&[
        "sign",
        key,
        file.path().to_str().unwrap(),
        &timestamp_ms.to_string(),
    ]);
    assert!(out.status.success(), "sdk sign failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The SDK's verdict; with `now_ms` the SDK uses that clock, without it the real clock.
fn sdk_verify(key: &str, body: &[u8], signature: &str, now_ms: Option<i64>) -> bool {
    let file = body_file(body);
    let path = file.path().to_str().unwrap().to_owned();
    let now = now_ms.map(|n| n.to_string());
    let mut args = vec!["verify", key, &path, signature];
    if let Some(now) = &now {
        args.push(now);
    }
    sdk(&args).status.success()
}

fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// The real Retell call object wrapped as a `call_analyzed` webhook, byte-exact (it contains
/// escaped umlauts and a multi-line layout, so any re-serialisation would break the MAC).
fn real_webhook() -> Vec<u8> {
    let call = std::fs::read(CALL_FIXTURE).expect("read call fixture");
    let mut body = br#"{"event":"call_analyzed","call":"#.to_vec();
    body.extend_from_slice(&call);
    body.push(b'}');
    body
}

fn ascii_webhook() -> Vec<u8> {
    "{\"event\":\"call_ended\",\"call\":{\"call_id\":\"call_x\",\"note\":\"Grüße\"}}"
        .as_bytes()
        .to_vec()
}

#[test]
fn sdk_reports_its_version() {
    let out = sdk(&["version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !version.trim().is_empty());
}

#[test]
fn sdk_signed_is_accepted_by_us_with_the_matching_secret_id() {
    let now = now_ms();
    for body in [real_webhook(), ascii_webhook()] {
        let header = sdk_sign(NEW.value, &body, now - 2_000);
        assert!(
            header.starts_with("v=") && header.contains(",d="),
            "{header}"
        );
        let id = verify_retell(Some(&header), &body, &[OLD, NEW], now, RETELL_TOLERANCE_MS)
            .unwrap_or_else(|e| panic!("our verify refused an SDK signature: {e}"));
        assert_eq!(id, NEW.id);
    }
}

#[test]
fn our_signature_is_accepted_by_the_sdk() {
    let now = now_ms();
    for body in [real_webhook(), ascii_webhook()] {
        let header = sign_retell(OLD.value, &body, now);
        assert!(
            sdk_verify(OLD.value, &body, &header, Some(now + 1_000)),
            "SDK refused our signature {header}"
        );
        // The SDK's public `verify(body, api_key, signature)` uses the real clock.
        assert!(sdk_verify(OLD.value, &body, &header, None));
        assert!(!sdk_verify(NEW.value, &body, &header, Some(now)));
    }
}

#[test]
fn tampered_body_is_rejected_by_both() {
    let now = now_ms();
    let body = real_webhook();
    let mut tampered = body.clone();
    let pos = tampered
        .windows(4)
        .position(|w| w == b"call")
        .expect("body mentions call");
    tampered[pos] = b'C';

    let sdk_header = sdk_sign(OLD.value, &body, now);
    let err = verify_retell(
        Some(&sdk_header),
        &tampered,
        &[OLD, NEW],
        now,
        RETELL_TOLERANCE_MS,
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::Mismatch { .. }), "{err}");

    let our_header = sign_retell(OLD.value, &body, now);
    assert!(!sdk_verify(OLD.value, &tampered, &our_header, Some(now)));
    // Sanity: the untampered pair is accepted by both, so the rejections above are real.
    assert!(sdk_verify(OLD.value, &body, &our_header, Some(now)));
    assert!(verify_retell(Some(&sdk_header), &body, &[OLD], now, RETELL_TOLERANCE_MS).is_ok());
}

#[test]
fn stale_signature_is_rejected_by_both() {
    let now = now_ms();
    let body = ascii_webhook();
    let stale = now - 6 * 60 * 1000;
    let sdk_header = sdk_sign(OLD.value, &body, stale);
    let err =
        verify_retell(Some(&sdk_header), &body, &[OLD], now, RETELL_TOLERANCE_MS).unwrap_err();
    assert!(
        matches!(err, SignatureError::OutsideTolerance { .. }),
        "{err}"
    );
    let our_header = sign_retell(OLD.value, &body, stale);
    assert_eq!(
        our_header, sdk_header,
        "same key, body and time give the same header"
    );
    assert!(!sdk_verify(OLD.value, &body, &our_header, Some(now)));
}
