//! Realistic Retell `call_ended` bodies, shaped after a real call object.
//!
//! Each tenant gets a template serialised once before the timed section; a request only
//! splices a fresh `call_id` between two pre-built byte slices.

use bytes::Bytes;
use serde::Serialize;

/// Stands in for the call id while the template is serialised.
const PLACEHOLDER: &str = "__loadgen_call_id__";

const TRANSCRIPT: [(&str, &str); 6] = [
    ("agent", "Guten Tag! Wie kann ich Ihnen helfen? Möchten Sie einen neuen Termin buchen oder einen bestehenden Termin ändern?"),
    ("user", "Ja, ich hätte gern einen Herrenhaarschnitt für morgen."),
    ("agent", "Gern. Zu welcher Uhrzeit passt es Ihnen?"),
    ("user", "Sechzehn Uhr, bitte. Mein Name ist Hans Robert."),
    ("agent", "Einen Moment bitte, ich prüfe die Verfügbarkeit für Sie..."),
    ("agent", "Ihr Termin morgen um 16 Uhr ist gebucht. Auf Wiederhören!"),
];

#[derive(Serialize)]
struct Envelope<'a> {
    event: &'static str,
    call: CallObject<'a>,
}

#[derive(Serialize)]
struct Utterance<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct DynamicVariables<'a> {
    #[serde(rename = "twilio-callsid")]
    twilio_callsid: &'a str,
    #[serde(rename = "twilio-accountsid")]
    twilio_accountsid: &'a str,
}

#[derive(Serialize)]
struct CollectedVariables<'a> {
    previous_node: &'a str,
    current_node: &'a str,
}

#[derive(Serialize)]
struct CallObject<'a> {
    call_id: &'a str,
    call_type: &'a str,
    agent_id: &'a str,
    agent_version: u32,
    agent_name: &'a str,
    retell_llm_dynamic_variables: DynamicVariables<'a>,
    collected_dynamic_variables: CollectedVariables<'a>,
    call_status: &'a str,
    start_timestamp: i64,
    end_timestamp: i64,
    duration_ms: i64,
    transcript: &'a str,
    transcript_object: Vec<Utterance<'a>>,
    disconnection_reason: &'a str,
    opt_out_sensitive_data_storage: bool,
    from_number: &'a str,
    to_number: &'a str,
    direction: &'a str,
}

/// A tenant's `call_ended` body with a hole where the call id goes.
#[derive(Debug, Clone)]
pub(crate) struct BodyTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl BodyTemplate {
    /// The usual two-KiB call of tenant number `tenant`.
    #[cfg(test)]
    pub(crate) fn new(tenant: usize, now_ms: i64) -> Self {
        Self::with_transcript(tenant, now_ms, 0)
    }

    /// Builds the template of tenant number `tenant`, for a call that ended just before
    /// `now_ms`, with the transcript repeated until it has at least `transcript_bytes` bytes
    /// (a long call: the large bodies of the memory benchmark; 0 keeps it at one telling).
    pub(crate) fn with_transcript(tenant: usize, now_ms: i64, transcript_bytes: usize) -> Self {
        let once: String = TRANSCRIPT
            .iter()
            .map(|(role, text)| format!("{}: {text}\n", capitalize(role)))
            .collect();
        let repeats = transcript_bytes.div_ceil(once.len()).max(1);
        let transcript = once.repeat(repeats);
        let agent_id = format!("agent_lg_{tenant:026x}");
        let to_number = format!("+4930{:08}", 30_000_000 + tenant % 10_000_000);
        let from_number = format!("+49151{:08}", 10_000_000 + tenant % 10_000_000);
        let (start, end) = (now_ms - 95_000, now_ms - 2_000);
        let envelope = Envelope {
            event: "call_ended",
            call: CallObject {
                call_id: PLACEHOLDER,
                call_type: "phone_call",
                agent_id: &agent_id,
                agent_version: 42,
                agent_name: "Loadgen Agent Friseur",
                retell_llm_dynamic_variables: DynamicVariables {
                    twilio_callsid: "CA1d3fb8cf78c5bf74a1188ab480ad4265",
                    twilio_accountsid: "AC008891bccf7c7e2f363eba6ae63d3f00",
                },
                collected_dynamic_variables: CollectedVariables {
                    previous_node: "Termin buchen",
                    current_node: "Ende",
                },
                call_status: "ended",
                start_timestamp: start,
                end_timestamp: end,
                duration_ms: end - start,
                transcript: &transcript,
                transcript_object: TRANSCRIPT
                    .iter()
                    .map(|&(role, content)| Utterance { role, content })
                    .collect(),
                disconnection_reason: "user_hangup",
                opt_out_sensitive_data_storage: false,
                from_number: &from_number,
                to_number: &to_number,
                direction: "inbound",
            },
        };
        let json = serde_json::to_vec(&envelope).expect("the envelope serialises");
        Self::split(&json)
    }

    fn split(json: &[u8]) -> Self {
        let hole = PLACEHOLDER.as_bytes();
        let at = json
            .windows(hole.len())
            .position(|w| w == hole)
            .expect("the template holds the placeholder");
        Self {
            head: json[..at].to_vec(),
            tail: json[at + hole.len()..].to_vec(),
        }
    }

    /// A body for a fresh call: `call_lg_<uuidv7>`.
    pub(crate) fn fresh(&self) -> Bytes {
        let call_id = format!("call_lg_{}", uuid::Uuid::now_v7().simple());
        let mut body = Vec::with_capacity(self.head.len() + call_id.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(call_id.as_bytes());
        body.extend_from_slice(&self.tail);
        Bytes::from(body)
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_bodies_are_call_ended_objects_of_about_two_kib() {
        let template = BodyTemplate::new(3, 1_761_297_706_005);
        let body = template.fresh();
        assert!(
            (1_500..3_000).contains(&body.len()),
            "body is {} bytes",
            body.len()
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["event"], "call_ended");
        let call = &value["call"];
        assert!(call["call_id"].as_str().unwrap().starts_with("call_lg_"));
        assert_eq!(call["call_status"], "ended");
        assert_eq!(call["direction"], "inbound");
        assert_eq!(call["to_number"], "+493030000003");
        assert!(call["from_number"].as_str().unwrap().starts_with("+49151"));
        assert!(call["start_timestamp"].as_i64() < call["end_timestamp"].as_i64());
        assert!(call["transcript"]
            .as_str()
            .unwrap()
            .starts_with("Agent: Guten Tag!"));
    }

    #[test]
    fn a_long_transcript_makes_a_large_body_that_still_parses() {
        let body = BodyTemplate::with_transcript(0, 0, 256 * 1024).fresh();
        assert!(body.len() > 256 * 1024, "body is {} bytes", body.len());
        // JSON escapes each line's newline, and the rest of the call adds two KiB.
        assert!(
            body.len() < 256 * 1024 * 21 / 20,
            "body is {} bytes",
            body.len()
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(value["call"]["transcript"].as_str().unwrap().len() >= 256 * 1024);
    }

    #[test]
    fn event_comes_first_as_retell_sends_it() {
        let body = BodyTemplate::new(0, 0).fresh();
        assert!(body.starts_with(br#"{"event":"call_ended","call":{"call_id":"call_lg_"#));
    }

    #[test]
    fn each_fresh_body_has_its_own_call_id() {
        let template = BodyTemplate::new(0, 0);
        let id = |body: Bytes| {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            value["call"]["call_id"].as_str().unwrap().to_owned()
        };
        assert_ne!(id(template.fresh()), id(template.fresh()));
    }
}
