//! The catalog commands of the real binary against a temp data dir: company → branch →
//! set-calcom → service → staff → assignment → appointments, plus refused input.

use std::path::Path;
use std::process::{Command, Output};

use askpro::embedded::EmbeddedStore;
use askpro_actors::domain::{Appointment, AppointmentStatus};
use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::StateStore;
use chrono::{TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

fn askpro(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        // No ./askpro.toml or environment config may leak into the test.
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run askpro")
}

/// Runs a command that must succeed and prints one JSON document.
fn json(dir: &Path, args: &[&str]) -> Value {
    let out = askpro(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "askpro {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("askpro {args:?} printed no JSON ({e}): {stderr}"))
}

/// Runs a command that must fail; returns its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = askpro(dir, args);
    assert!(!out.status.success(), "askpro {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
        .to_owned()
}

#[tokio::test]
async fn catalog_commands_round_trip_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let company = json(dir, &["company", "create", "--name", "Salon", "--json"]);
    let company_id = text(&company, "id");
    let branch = json(
        dir,
        &[
            "branch",
            "create",
            "--company",
            &company_id,
            "--name",
            "Mitte",
            "--phone",
            "030 1234567",
            "--agent-id",
            "agent_1",
            "--json",
        ],
    );
    let branch_id = text(&branch, "id");
    assert_eq!(branch["retell_agent_id"], "agent_1");

    let set = askpro(
        dir,
        &[
            "branch",
            "set-calcom",
            "--branch",
            &branch_id,
            "--api-key",
            "cal_live_topsecret",
            "--event-type",
            "42",
            "--base-url",
            "http://127.0.0.1:9/",
            "--json",
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let stdout = String::from_utf8_lossy(&set.stdout);
    assert!(!stdout.contains("topsecret"), "api key printed: {stdout}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["calcom"]["api_key"], "<redacted>");
    assert_eq!(shown["calcom"]["event_type_id"], 42);
    assert_eq!(shown["calcom"]["base_url"], "http://127.0.0.1:9");
    let listed = json(dir, &["branch", "list", "--company", &company_id, "--json"]);
    assert!(!listed.to_string().contains("topsecret"), "{listed}");
    assert_eq!(listed[0]["calcom"]["event_type_id"], 42);

    let updated = json(
        dir,
        &[
            "branch",
            "update",
            "--branch",
            &branch_id,
            "--phone",
            "+49 30 7654321",
            "--name",
            "Mitte Ost",
            "--json",
        ],
    );
    assert_eq!(updated["phone"], "+49307654321");
    assert_eq!(updated["name"], "Mitte Ost");
    assert_eq!(
        updated["calcom"]["api_key"], "<redacted>",
        "update keeps the connection"
    );

    let service = json(
        dir,
        &[
            "service",
            "create",
            "--company",
            &company_id,
            "--name",
            "Schnitt",
            "--branch",
            &branch_id,
            "--duration-minutes",
            "45",
            "--price-cents",
            "2500",
            "--event-type",
            "42",
            "--json",
        ],
    );
    let service_id = text(&service, "id");
    assert_eq!(service["duration_minutes"], 45);
    assert_eq!(service["currency"], "EUR");
    let staff = json(
        dir,
        &[
            "staff",
            "create",
            "--company",
            &company_id,
            "--name",
            "Ada",
            "--branch",
            &branch_id,
            "--email",
            "ada@example.org",
            "--json",
        ],
    );
    let staff_id = text(&staff, "id");
    let assigned = json(
        dir,
        &[
            "staff",
            "assign",
            "--company",
            &company_id,
            "--staff",
            &staff_id,
            "--service",
            &service_id,
            "--json",
        ],
    );
    assert_eq!(assigned["service_id"], service_id.as_str());
    let services = json(
        dir,
        &["service", "list", "--company", &company_id, "--json"],
    );
    assert_eq!(services.as_array().map(Vec::len), Some(1));
    let members = json(dir, &["staff", "list", "--company", &company_id, "--json"]);
    assert_eq!(members[0]["id"], staff_id.as_str());

    let none = json(
        dir,
        &["appointments", "list", "--company", &company_id, "--json"],
    );
    assert_eq!(none, Value::Array(vec![]));

    // One appointment written through the store shows with every documented field.
    let company: CompanyId = company_id.parse().unwrap();
    let booked = appointment(company, Uuid::parse_str(&service_id).unwrap());
    {
        let store = EmbeddedStore::open(dir).unwrap();
        assert!(store.upsert_appointment(&booked).await.unwrap());
    }
    let list = json(
        dir,
        &["appointments", "list", "--company", &company_id, "--json"],
    );
    let row = &list[0];
    assert_eq!(row["id"], booked.id.to_string().as_str());
    assert_eq!(row["status"], "scheduled");
    assert_eq!(row["start"], "2026-11-25T10:00:00Z");
    assert_eq!(row["calcom_uid"], "uid-1");
    assert_eq!(row["service_id"], service_id.as_str());
    assert_eq!(row["attendee_name"], "Ada");
    assert_eq!(row["sync_attempts"], 1);
    assert_eq!(row["last_error"], Value::Null);
    assert!(text(row, "created_at").ends_with('Z'), "{row}");
    assert!(row.get("branch_id").is_some(), "{row}");
    let pending = json(
        dir,
        &[
            "appointments",
            "list",
            "--company",
            &company_id,
            "--status",
            "pending_sync",
            "--json",
        ],
    );
    assert_eq!(pending, Value::Array(vec![]));
    let human = askpro(dir, &["appointments", "list", "--company", &company_id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("uid-1"));
}

#[test]
fn bad_input_is_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let company = json(dir, &["company", "create", "--name", "Salon", "--json"]);
    let company_id = text(&company, "id");
    let branch = json(
        dir,
        &[
            "branch",
            "create",
            "--company",
            &company_id,
            "--name",
            "Mitte",
            "--phone",
            "030 1234567",
            "--json",
        ],
    );
    let branch_id = text(&branch, "id");

    let stderr = refused(
        dir,
        &[
            "branch",
            "set-calcom",
            "--branch",
            &branch_id,
            "--api-key",
            "k",
            "--event-type",
            "1",
            "--base-url",
            "https://api.cal.com/v2",
        ],
    );
    assert!(stderr.contains("--base-url"), "{stderr}");
    let stderr = refused(
        dir,
        &[
            "branch",
            "set-calcom",
            "--branch",
            &Uuid::now_v7().to_string(),
            "--api-key",
            "k",
            "--event-type",
            "1",
        ],
    );
    assert!(stderr.contains("--branch"), "{stderr}");
    let stderr = refused(
        dir,
        &[
            "service",
            "create",
            "--company",
            &company_id,
            "--name",
            "x",
            "--currency",
            "euro",
        ],
    );
    assert!(stderr.contains("--currency"), "{stderr}");
    let stderr = refused(
        dir,
        &[
            "appointments",
            "list",
            "--company",
            &company_id,
            "--status",
            "booked",
        ],
    );
    assert!(stderr.contains("--status"), "{stderr}");
    let stderr = refused(
        dir,
        &[
            "staff",
            "assign",
            "--company",
            &company_id,
            "--staff",
            &Uuid::now_v7().to_string(),
            "--service",
            &Uuid::now_v7().to_string(),
        ],
    );
    assert!(stderr.contains("--staff"), "{stderr}");
    let stderr = refused(dir, &["branch", "update", "--branch", &branch_id]);
    assert!(stderr.contains("nothing to update"), "{stderr}");
}

fn appointment(company_id: CompanyId, service_id: Uuid) -> Appointment {
    let start = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
    Appointment {
        company_id,
        id: Uuid::now_v7(),
        calcom_uid: Some("uid-1".into()),
        branch_id: None,
        service_id: Some(service_id),
        customer_id: None,
        status: AppointmentStatus::Scheduled,
        start_at: Some(start),
        end_at: Some(start + chrono::Duration::minutes(45)),
        title: Some("Schnitt".into()),
        attendee_name: Some("Ada".into()),
        attendee_email: None,
        attendee_phone: None,
        timezone: Some("Europe/Berlin".into()),
        rescheduled_to_uid: None,
        idempotency_key: Some("key-1".into()),
        sync_attempts: 1,
        last_error: None,
        source_event: EventId::new(),
        version: 1,
        created_at: start,
        updated_at: start,
        contact_source: None,
    }
}
