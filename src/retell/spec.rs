//! What a provisioned branch looks like at Retell: the LLM (German prompt, `custom` tools
//! pointing at AskPro), the agent (webhook, zone, language, post-call analysis fields our
//! extractor reads) and the phone binding. Pure functions of the branch and the public URL.

use askpro_actors::domain::Branch;
use serde_json::{json, Value};

/// The live tools, served by `POST /webhooks/retell/{company_id}/functions/{tool}`.
pub const TOOLS: [&str; 5] = [
    "check_availability",
    "book_appointment",
    "find_appointment",
    "reschedule_appointment",
    "cancel_appointment",
];
/// Used when an agent is created without `--voice-id` (an update keeps the agent's voice).
pub const DEFAULT_VOICE_ID: &str = "retell-Cimo";
/// Longer than AskPro's own answer budget, far below Retell's 120 s default, so a caller is
/// never left in silence for long.
const TOOL_TIMEOUT_MS: u64 = 15_000;
/// Tags the LLM with its branch, so a run that lost the LLM's id finds it by listing.
pub const BRANCH_TAG: &str = "askpro_branch_id";

/// Where AskPro is reachable from Retell, without a trailing slash.
#[derive(Clone, Debug)]
pub struct Urls {
    pub public: String,
}

impl Urls {
    pub fn new(public: &str) -> Self {
        Self {
            public: public.trim_end_matches('/').to_owned(),
        }
    }

    pub fn tool(&self, branch: &Branch, tool: &str) -> String {
        format!(
            "{}/webhooks/retell/{}/functions/{tool}",
            self.public, branch.company_id
        )
    }

    /// The tenant's webhook URL (the tenant is in the path).
    pub fn webhook(&self, branch: &Branch) -> String {
        format!("{}/webhooks/retell/{}", self.public, branch.company_id)
    }

    pub fn inbound(&self) -> String {
        format!("{}/webhooks/retell/inbound", self.public)
    }
}

/// The agent's name at Retell; it carries the branch id, so listing finds the agent.
pub fn agent_name(branch: &Branch) -> String {
    format!("AskPro {} ({})", branch.name, branch.id)
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// JSON Schema of a tool's arguments; they hold what the caller said, as said.
fn parameters(tool: &str) -> Value {
    let date = string("Datum wie vom Anrufer gesagt, z. B. 'morgen', 'Dienstag', '12. März'");
    let time = string("Uhrzeit wie vom Anrufer gesagt, z. B. '14 Uhr', 'halb drei'");
    let service = string("Gewünschte Dienstleistung, falls genannt");
    let name = string("Vor- und Nachname des Anrufers");
    let phone = string("Rückrufnummer, falls der Anrufer eine andere als die aktuelle nennt");
    let email = string("E-Mail-Adresse, falls genannt");
    let (properties, required): (Value, &[&str]) = match tool {
        "check_availability" => (
            json!({"date": date, "time": time, "service": service}),
            &["date"],
        ),
        "book_appointment" => (
            json!({"date": date, "time": time, "service": service, "name": name, "phone": phone, "email": email}),
            &["date", "time", "name"],
        ),
        "find_appointment" => (json!({"name": name, "phone": phone, "date": date}), &[]),
        "reschedule_appointment" => (
            json!({"date": date, "time": time, "service": service, "name": name, "phone": phone}),
            &["date", "time"],
        ),
        _ => (
            json!({"date": date, "time": time, "name": name, "phone": phone}),
            &[],
        ),
    };
    json!({"type": "object", "properties": properties, "required": required})
}

fn description(tool: &str) -> &'static str {
    match tool {
        "check_availability" => "Prüft, ob zum gewünschten Datum und zur Uhrzeit ein Termin frei ist, und nennt sonst die nächsten freien Zeiten.",
        "book_appointment" => "Bucht den Termin verbindlich, nachdem der Anrufer Datum, Uhrzeit und Namen bestätigt hat.",
        "find_appointment" => "Findet die bestehenden Termine des Anrufers.",
        "reschedule_appointment" => "Verschiebt den bestehenden Termin des Anrufers auf das neue Datum und die neue Uhrzeit.",
        _ => "Sagt den bestehenden Termin des Anrufers ab.",
    }
}

fn tool(branch: &Branch, urls: &Urls, name: &str) -> Value {
    json!({
        "type": "custom",
        "name": name,
        "description": description(name),
        "url": urls.tool(branch, name),
        "parameters": parameters(name),
        "speak_during_execution": true,
        "speak_after_execution": true,
        "execution_message_description": "Einen Moment bitte, ich schaue kurz nach.",
        "timeout_ms": TOOL_TIMEOUT_MS,
    })
}

const PROMPT: &str = "\
Du bist die freundliche telefonische Terminassistenz von {{company_name}}, Standort \
{{branch_name}}. Sprich Deutsch, kurz und natürlich, und siez den Anrufer. Heute ist \
{{current_time}}. Angebotene Leistungen: {{services}}.

So gehst du vor:
1. Frage nach dem Anliegen. Möchte der Anrufer einen Termin, frage nach Leistung, Datum und \
Uhrzeit.
2. Rufe check_availability mit Datum, Uhrzeit und Leistung so auf, wie der Anrufer sie gesagt \
hat (z. B. 'morgen', '14 Uhr'). Erfinde nichts und rechne keine Daten selbst um.
3. Ist der Termin frei, nenne ihn, frage nach dem vollständigen Namen und lass ihn bestätigen. \
Sonst biete die genannten Alternativen an.
4. Erst nach der Bestätigung rufe book_appointment auf. Sage nur dann, dass der Termin gebucht \
ist, wenn die Antwort booked=true enthält; bei pending=true sage, dass die Buchung bestätigt \
wird, sobald das System sie abgeschlossen hat.
5. Für bestehende Termine nutze find_appointment, reschedule_appointment oder \
cancel_appointment.
Bittet eine Antwort darum, etwas zu wiederholen, frage genau danach nach. Lies die message \
einer Antwort sinngemäß vor.";

const BEGIN_MESSAGE: &str =
    "Guten Tag, Sie sind verbunden mit {{branch_name}}. Wie kann ich Ihnen helfen?";

/// The LLM's body (create and update alike).
pub fn llm(branch: &Branch, urls: &Urls, company_name: &str) -> Value {
    let tools: Vec<Value> = TOOLS.iter().map(|t| tool(branch, urls, t)).collect();
    json!({
        "general_prompt": PROMPT,
        "begin_message": BEGIN_MESSAGE,
        "general_tools": tools,
        "default_dynamic_variables": {
            "company_name": company_name,
            "branch_name": branch.name,
            "services": "",
            BRANCH_TAG: branch.id.to_string(),
        },
    })
}

/// `post_call_analysis_data` named with the keys `actors/src/extract` reads from
/// `custom_analysis_data`.
fn analysis() -> Value {
    let item = |kind: &str, name: &str, description: &str| json!({"type": kind, "name": name, "description": description});
    json!([
        item("boolean", "appointment_made", "Wurde im Gespräch ein Termin vereinbart?"),
        item("string", "appointment_date_time", "Vereinbarter Termin als 'YYYY-MM-DD HH:MM' in der Zeitzone des Standorts, leer wenn keiner"),
        item("string", "service_name", "Gebuchte Dienstleistung"),
        item("string", "caller_full_name", "Vor- und Nachname des Anrufers"),
        item("string", "caller_phone", "Vom Anrufer genannte Rückrufnummer, falls eine genannt wurde"),
        item("string", "email", "Vom Anrufer genannte E-Mail-Adresse, falls eine genannt wurde"),
    ])
}

/// The agent's body. `voice_id` is left out when `None` (an update keeps the voice).
pub fn agent(branch: &Branch, urls: &Urls, llm_id: &str, voice_id: Option<&str>) -> Value {
    let mut body = json!({
        "response_engine": {"type": "retell-llm", "llm_id": llm_id},
        "agent_name": agent_name(branch),
        "language": "de-DE",
        "timezone": branch.timezone,
        "webhook_url": urls.webhook(branch),
        "webhook_events": ["call_started", "call_ended", "call_analyzed"],
        "post_call_analysis_data": analysis(),
        "normalize_for_speech": true,
    });
    if let (Some(voice), Some(fields)) = (voice_id, body.as_object_mut()) {
        fields.insert("voice_id".into(), json!(voice));
    }
    body
}

/// The phone number's binding: all inbound calls to the agent, routed through AskPro.
pub fn phone(urls: &Urls, agent_id: &str) -> Value {
    json!({
        "inbound_agents": [{"agent_id": agent_id, "weight": 1}],
        "inbound_webhook_url": urls.inbound(),
    })
}

/// Whether `current` already holds everything `desired` says (Retell adds fields of its own,
/// so extra fields in `current` do not count as a difference).
pub fn holds(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, v)| have.get(k).is_some_and(|h| holds(h, v))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| holds(h, w))
        }
        (Value::Number(have), Value::Number(want)) => have.as_f64() == want.as_f64(),
        (have, want) => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_ignores_extra_fields_but_not_differences() {
        let want = json!({"a": 1, "b": [{"c": "x"}]});
        assert!(holds(
            &json!({"a": 1.0, "b": [{"c": "x", "d": 2}], "e": 3}),
            &want
        ));
        assert!(!holds(&json!({"a": 2, "b": [{"c": "x"}]}), &want));
        assert!(!holds(
            &json!({"a": 1, "b": [{"c": "x"}, {"c": "y"}]}),
            &want
        ));
        assert!(!holds(&json!({"b": [{"c": "x"}]}), &want));
    }
}
