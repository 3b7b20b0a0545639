//! The tenant API (issue 12). So far: `askpro apikey create/list/revoke` of the real binary
//! against a temp data dir, checked through the store's global key table.

use std::path::Path;
use std::process::{Command, Output};

use askpro::embedded::EmbeddedStore;
use askpro_actors::StateStore;
use serde_json::Value;

fn askpro(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env_remove("ASKPRO_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run askpro")
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = askpro(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "askpro {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("askpro {args:?} printed no JSON ({e}): {stderr}"))
}

#[tokio::test]
async fn apikey_create_prints_the_key_once_list_never_shows_it_revoke_marks_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let company = json(d, &["company", "create", "--name", "Salon", "--json"]);
    let company = company["id"].as_str().expect("company id").to_owned();

    let created = json(
        d,
        &[
            "apikey",
            "create",
            "--company",
            &company,
            "--name",
            "crm",
            "--json",
        ],
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let key = created["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("ak_") && key.len() == 67, "{key}");

    let listed = json(d, &["apikey", "list", "--company", &company, "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["name"], "crm");
    assert!(listed[0]["revoked_at"].is_null());
    let text = listed.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&askpro::apikey::hash(&key)),
        "{text}"
    );

    {
        // Only the hash is stored, and it resolves to the company.
        let store = EmbeddedStore::open(d).expect("open store");
        let found = store
            .api_key_by_hash(&askpro::apikey::hash(&key))
            .await
            .unwrap()
            .expect("key stored by its hash");
        assert_eq!(found.company_id.to_string(), company);
        assert_eq!(found.id, id);
    }

    let revoked = json(d, &["apikey", "revoke", "--id", &id, "--json"]);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let listed = json(d, &["apikey", "list", "--company", &company, "--json"]);
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");

    let missing = askpro(d, &["apikey", "revoke", "--id", "key_nope"]);
    assert!(!missing.status.success());
    let unknown_company = askpro(
        d,
        &[
            "apikey",
            "create",
            "--company",
            &uuid::Uuid::now_v7().to_string(),
        ],
    );
    assert!(!unknown_company.status.success());
}
