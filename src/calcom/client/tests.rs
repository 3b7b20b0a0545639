//! Request building and transport-error mapping; the wire shapes are tested in `wire`.

use std::collections::BTreeMap;

use askpro_actors::booking::Attendee;

use super::*;

fn request(metadata: BTreeMap<String, String>) -> CreateBooking {
    CreateBooking {
        start: "2030-01-07T09:00:00Z".parse().unwrap(),
        event_type_id: 7,
        length_minutes: Some(45),
        attendee: Attendee {
            name: "Ada".into(),
            time_zone: "Europe/Berlin".into(),
            email: None,
            phone: Some("+4930123456".into()),
            language: Some("de".into()),
        },
        metadata,
    }
}

#[test]
fn create_body_uses_cal_com_field_names() {
    let metadata = BTreeMap::from([("askpro_key".to_string(), "k1".to_string())]);
    let body = create_body(&request(metadata)).unwrap();
    assert_eq!(body["start"], "2030-01-07T09:00:00.000Z");
    assert_eq!(body["eventTypeId"], 7);
    assert_eq!(body["lengthInMinutes"], 45);
    assert_eq!(body["attendee"]["phoneNumber"], "+4930123456");
    assert!(body["attendee"].get("email").is_none());
    assert_eq!(body["metadata"]["askpro_key"], "k1");
}

#[test]
fn metadata_over_the_limits_is_refused_naming_the_key() {
    let long_key = "k".repeat(41);
    let metadata = BTreeMap::from([(long_key.clone(), "v".to_string())]);
    let err = create_body(&request(metadata)).unwrap_err();
    assert!(matches!(&err, BookingError::Permanent { code, message, .. }
        if code == "InvalidMetadata" && message.contains(&long_key)));
    assert!(!err.trips_breaker());

    let metadata = BTreeMap::from([("note".to_string(), "x".repeat(501))]);
    let err = create_body(&request(metadata)).unwrap_err();
    assert!(err.to_string().contains("`note`"), "{err}");

    let metadata = (0..51)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert!(create_body(&request(metadata)).is_err());
    let metadata = (0..50)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert!(create_body(&request(metadata)).is_ok());
}

#[test]
fn an_attendee_without_email_or_phone_is_refused() {
    let mut req = request(BTreeMap::new());
    req.attendee.phone = None;
    let err = create_body(&req).unwrap_err();
    assert!(matches!(err, BookingError::Permanent { ref code, .. } if code == "InvalidAttendee"));
}

#[test]
fn endpoint_appends_v2_and_escapes_segments() {
    let url = endpoint("http://fake:1/prefix/", &["bookings", "a/b", "cancel"], &[]).unwrap();
    assert_eq!(
        url.as_str(),
        "http://fake:1/prefix/v2/bookings/a%2Fb/cancel"
    );
    let url = endpoint(
        "http://fake:1",
        &["slots"],
        &[("timeZone", "Europe/Berlin".into())],
    )
    .unwrap();
    assert_eq!(
        url.as_str(),
        "http://fake:1/v2/slots?timeZone=Europe%2FBerlin"
    );
    assert_eq!(
        endpoint("https://api.cal.com", &["slots"], &[])
            .unwrap()
            .as_str(),
        "https://api.cal.com/v2/slots"
    );
    assert!(matches!(
        endpoint("ftp://api.cal.com", &["slots"], &[]),
        Err(BookingError::Permanent { .. })
    ));
    assert!(matches!(
        endpoint("not a url", &["slots"], &[]),
        Err(BookingError::Permanent { .. })
    ));
}

#[test]
fn success_envelope_yields_data() {
    let data = success_data(br#"{"status":"success","data":{"id":1}}"#).unwrap();
    assert_eq!(data["id"], 1);
    assert!(matches!(
        success_data(b"<html>"),
        Err(BookingError::Unknown { .. })
    ));
    assert!(matches!(
        success_data(br#"{"status":"error","error":{}}"#),
        Err(BookingError::Unknown { .. })
    ));
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Bind then drop: the port is closed, so the connect fails before anything is sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = CalcomClient::new(ClientOptions::default()).unwrap();
    let target = CalcomConfig {
        api_key: "cal_test".into(),
        event_type_id: 1,
        base_url: format!("http://{addr}"),
        rate_limit_per_min: None,
    };
    let now = Utc::now();
    let err = client.slots(&target, 1, now, now, "UTC").await.unwrap_err();
    assert!(
        matches!(err, BookingError::Transient { status: None, .. }),
        "{err:?}"
    );
}
