//! Every refusal is our JSON `{"error": {"code", "message"}}` and says what was wrong, no more:
//! unknown paths, wrong methods, axum's own rejections, unreadable signature headers, and 401s
//! that do not reveal how many secrets a tenant has.

use askpro::signature::sign_retell;
use askpro_actors::Provider;
use reqwest::header::HeaderValue;

use crate::harness::*;

fn assert_json_error(status: u16, reply: &serde_json::Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{reply}");
    assert_eq!(reply["error"]["code"], want_code, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{reply}");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let server = TestServer::start().await;
    let (status, reply) =
        json_body(server.client.get(server.url("/nope")).send().await.unwrap()).await;
    assert_json_error(status, &reply, 404, "not_found");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/nope"));

    let response = server
        .client
        .get(server.url("/webhooks/retell"))
        .send()
        .await
        .unwrap();
    let allow = response.headers().get("allow").cloned();
    let (status, reply) = json_body(response).await;
    assert_json_error(status, &reply, 405, "method_not_allowed");
    assert_eq!(allow.as_ref().and_then(|v| v.to_str().ok()), Some("POST"));

    let response = server
        .client
        .post(server.url("/health"))
        .send()
        .await
        .unwrap();
    let (status, reply) = json_body(response).await;
    assert_json_error(status, &reply, 405, "method_not_allowed");
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn extractor_rejections_answer_json() {
    let server = TestServer::start().await;
    // A company segment that is not UTF-8 fails axum's Path extractor (plain text by default).
    let response = server
        .client
        .post(server.url("/webhooks/retell/%FF%FE"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let content_type = response.headers().get("content-type").cloned();
    let (status, reply) = json_body(response).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(
        content_type,
        Some(HeaderValue::from_static("application/json"))
    );
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_non_ascii_signature_header_is_reported_as_unreadable_not_missing() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "ascii", "+49301239101").await;
    let body = retell_body("call_ended", "call_ascii", &t.phone);
    let raw = HeaderValue::from_bytes("v=1,d=\u{e4}bc".as_bytes()).unwrap();
    for (path, header) in [
        (
            format!("/webhooks/retell/{}", t.company),
            "x-retell-signature",
        ),
        (
            format!("/webhooks/calcom/{}", t.company),
            "x-cal-signature-256",
        ),
    ] {
        let response = server
            .client
            .post(server.url(&path))
            .header(header, raw.clone())
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, reply) = json_body(response).await;
        assert_json_error(status, &reply, 401, "bad_signature");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(header) && message.contains("not visible ASCII"),
            "{message}"
        );
        assert!(!message.contains("missing"), "{message}");
    }
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_wrong_signature_does_not_reveal_how_many_secrets_are_active() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "secrets", "+49301239102").await;
    add_secret(
        server.store.as_ref(),
        t.company,
        Provider::Retell,
        "sec_retell_2",
        "key_second",
    )
    .await;
    let body = retell_body("call_ended", "call_secrets", &t.phone);
    let (status, reply) = json_body(server.post_retell(t.company, &body, "key_wrong").await).await;
    assert_json_error(status, &reply, 401, "bad_signature");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not match"), "{message}");
    assert!(
        !message.contains('2') && !message.contains("secret(s)") && !message.contains("secrets"),
        "{message}"
    );
    // The right secret is still accepted: the refusal above was about the signature only.
    let signature = sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
    let response = server
        .post_raw(
            &format!("/webhooks/retell/{}", t.company),
            &body,
            Some(("x-retell-signature", &signature)),
        )
        .await;
    assert_eq!(response.status(), 202);
    server.stop().await.0.unwrap();
}
