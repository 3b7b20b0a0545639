//! Every CQL statement of the store, prepared once at open and kept in [`Statements`]. No
//! statement is built at run time: values are always bind markers.
//!
//! Kinds: `read` (idempotent, paged at [`PAGE_SIZE`]), `write` (idempotent: the driver may
//! retry it), `lwt` (conditional: Paxos at the serial consistency; never retried blindly,
//! since a timed-out LWT may have applied) and `counter` (not idempotent either).

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::session::PAGE_SIZE;
use super::CqlError;

macro_rules! company_cols {
    () => {
        "company_id, name, allow_unsigned_calcom, created_at"
    };
}
macro_rules! branch_cols {
    () => {
        "company_id, branch_id, name, phone, timezone, retell_agent_id, calcom, created_at, \
         fallback_email"
    };
}
macro_rules! service_cols {
    () => {
        "company_id, service_id, branch_id, name, duration_minutes, price_cents, currency, \
         calcom_event_type_id, active, metadata, created_at"
    };
}
macro_rules! staff_cols {
    () => {
        "company_id, staff_id, branch_id, name, email, active, created_at"
    };
}
macro_rules! customer_cols {
    () => {
        "company_id, customer_id, name, phone, email, created_at"
    };
}
macro_rules! event_cols {
    () => {
        "company_id, event_id, provider, event_type, dedup_key, status, attempts, error, \
         correlation_id, secret_id, log_partition, log_offset, received_at, updated_at, payload"
    };
}
macro_rules! call_cols {
    () => {
        "company_id, call_id, branch_id, agent_id, direction, from_number, to_number, status, \
         start_at, end_at, duration_ms, disconnection_reason, summary, last_event, version, \
         updated_at, write_id"
    };
}
macro_rules! appointment_cols {
    () => {
        "company_id, appointment_id, calcom_uid, branch_id, service_id, customer_id, status, \
         start_at, end_at, title, attendee_name, attendee_email, attendee_phone, timezone, \
         rescheduled_to_uid, idempotency_key, sync_attempts, last_error, source_event, version, \
         created_at, updated_at, write_id, contact_source"
    };
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Lwt,
    Counter,
}

macro_rules! statements {
    ($($name:ident : $kind:ident = $cql:expr;)*) => {
        /// The prepared statements, one field per statement.
        pub(super) struct Statements {
            $(pub $name: PreparedStatement,)*
        }

        impl Statements {
            /// Prepares every statement (in the session's keyspace).
            pub(super) async fn prepare(session: &Session) -> Result<Self, CqlError> {
                Ok(Statements {
                    $($name: prepare(session, stringify!($name), $cql, Kind::$kind).await?,)*
                })
            }
        }
    };
}

async fn prepare(
    session: &Session,
    name: &'static str,
    cql: &'static str,
    kind: Kind,
) -> Result<PreparedStatement, CqlError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|source| CqlError::Prepare {
            name,
            source: Box::new(source),
        })?;
    match kind {
        Kind::Read => {
            statement.set_is_idempotent(true);
            statement.set_page_size(PAGE_SIZE);
        }
        Kind::Write => statement.set_is_idempotent(true),
        Kind::Lwt | Kind::Counter => statement.set_is_idempotent(false),
    }
    Ok(statement)
}

statements! {
    // ---- tenants -----------------------------------------------------------------------
    company_insert: Lwt = concat!("INSERT INTO companies (", company_cols!(),
        ") VALUES (?, ?, ?, ?) IF NOT EXISTS");
    company_get: Read = concat!("SELECT ", company_cols!(), " FROM companies WHERE company_id = ?");
    company_all: Read = concat!("SELECT ", company_cols!(), " FROM companies");

    branch_insert: Lwt = concat!("INSERT INTO branches (", branch_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS");
    branch_get: Read = concat!("SELECT ", branch_cols!(),
        " FROM branches WHERE company_id = ? AND branch_id = ?");
    branch_all: Read = concat!("SELECT ", branch_cols!(), " FROM branches WHERE company_id = ?");
    branch_update: Lwt = "UPDATE branches SET name = ?, phone = ?, timezone = ?, \
        retell_agent_id = ?, calcom = ?, created_at = ?, fallback_email = ? \
        WHERE company_id = ? AND branch_id = ? IF phone = ?";
    branch_llm_set: Write =
        "INSERT INTO branch_retell_llms (company_id, branch_id, llm_id) VALUES (?, ?, ?)";
    branch_llm_get: Read =
        "SELECT branch_id, llm_id FROM branch_retell_llms WHERE company_id = ? AND branch_id = ?";
    branch_llm_all: Read = "SELECT branch_id, llm_id FROM branch_retell_llms WHERE company_id = ?";

    phone_claim: Lwt = "INSERT INTO phone_routes (phone, company_id, branch_id, claimed_at) \
        VALUES (?, ?, ?, ?) IF NOT EXISTS";
    phone_get: Read = "SELECT company_id, branch_id, claimed_at FROM phone_routes WHERE phone = ?";
    phone_takeover: Lwt = "UPDATE phone_routes SET company_id = ?, branch_id = ?, claimed_at = ? \
        WHERE phone = ? IF company_id = ? AND branch_id = ?";
    phone_release: Lwt = "DELETE FROM phone_routes WHERE phone = ? IF company_id = ? AND branch_id = ?";

    routing_bump: Counter = "UPDATE routing_version SET version = version + 1 WHERE id = 0";
    routing_get: Read = "SELECT version FROM routing_version WHERE id = 0";

    secret_insert: Lwt = "INSERT INTO secrets (company_id, provider, secret_id, value, created_at) \
        VALUES (?, ?, ?, ?, ?) IF NOT EXISTS";
    secret_list: Read = "SELECT company_id, provider, secret_id, value, created_at FROM secrets \
        WHERE company_id = ? AND provider = ?";
    secret_delete: Lwt = "DELETE FROM secrets WHERE company_id = ? AND provider = ? \
        AND secret_id = ? IF EXISTS";

    // ---- catalog -----------------------------------------------------------------------
    service_insert: Lwt = concat!("INSERT INTO services (", service_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS");
    service_write: Write = concat!("INSERT INTO services (", service_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    service_get: Read = concat!("SELECT ", service_cols!(),
        " FROM services WHERE company_id = ? AND service_id = ?");
    service_all: Read = concat!("SELECT ", service_cols!(), " FROM services WHERE company_id = ?");

    default_claim: Lwt = "INSERT INTO default_service_claims (company_id, branch_id, service_id, \
        claimed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    default_claim_get: Read = "SELECT service_id, claimed_at FROM default_service_claims \
        WHERE company_id = ? AND branch_id = ?";
    default_claim_takeover: Lwt = "UPDATE default_service_claims SET service_id = ?, \
        claimed_at = ? WHERE company_id = ? AND branch_id = ? IF service_id = ?";

    staff_insert: Lwt = concat!("INSERT INTO staff (", staff_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS");
    staff_get: Read = concat!("SELECT ", staff_cols!(),
        " FROM staff WHERE company_id = ? AND staff_id = ?");
    staff_all: Read = concat!("SELECT ", staff_cols!(), " FROM staff WHERE company_id = ?");

    assignment_insert: Write = "INSERT INTO assignments (company_id, staff_id, service_id) \
        VALUES (?, ?, ?)";
    assignment_all: Read = "SELECT company_id, staff_id, service_id FROM assignments \
        WHERE company_id = ?";

    customer_insert: Lwt = concat!("INSERT INTO customers (", customer_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS");
    customer_get: Read = concat!("SELECT ", customer_cols!(),
        " FROM customers WHERE company_id = ? AND customer_id = ?");
    customer_fill: Lwt = "UPDATE customers SET name = ?, email = ? \
        WHERE company_id = ? AND customer_id = ? IF name = ? AND email = ?";
    customer_phone_claim: Lwt = "INSERT INTO customers_by_phone (company_id, phone, customer_id, \
        claimed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    customer_phone_get: Read = "SELECT customer_id, claimed_at FROM customers_by_phone \
        WHERE company_id = ? AND phone = ?";
    customer_phone_takeover: Lwt = "UPDATE customers_by_phone SET customer_id = ?, claimed_at = ? \
        WHERE company_id = ? AND phone = ? IF customer_id = ?";
    customer_phone_release: Lwt = "DELETE FROM customers_by_phone \
        WHERE company_id = ? AND phone = ? IF customer_id = ?";

    // ---- event ledger ------------------------------------------------------------------
    // Initial rows are written at timestamp 1: a redelivery rewrites them, but every later
    // status change (a normal, current timestamp) wins over that write, so a redelivered
    // record never resets status or attempts, without a read or an LWT.
    event_insert: Write = concat!("INSERT INTO events (", event_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP 1");
    event_pointer_insert: Write = "INSERT INTO event_pointers (event_id, company_id) VALUES (?, ?)";
    event_day_insert: Write = "INSERT INTO event_days (company_id, day) VALUES (?, ?)";
    event_by_day_insert: Write = "INSERT INTO events_by_day (company_id, day, received_at, \
        event_id, status) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP 1";
    event_get: Read = concat!("SELECT ", event_cols!(),
        " FROM events WHERE company_id = ? AND event_id = ?");
    event_received: Read = "SELECT received_at FROM events WHERE company_id = ? AND event_id = ?";
    event_status_update: Write = "UPDATE events SET status = ?, attempts = ?, error = ?, \
        updated_at = ? WHERE company_id = ? AND event_id = ?";
    event_by_day_status: Write = "UPDATE events_by_day SET status = ? WHERE company_id = ? \
        AND day = ? AND received_at = ? AND event_id = ?";
    event_pointer_get: Read = "SELECT company_id FROM event_pointers WHERE event_id = ?";
    event_days_list: Read = "SELECT day FROM event_days WHERE company_id = ?";
    events_of_day: Read = "SELECT received_at, event_id, status FROM events_by_day \
        WHERE company_id = ? AND day = ?";

    // ---- dedup -------------------------------------------------------------------------
    dedup_insert: Lwt = "INSERT INTO dedup (company_id, dedup_key, holder, completed, \
        lease_until, expires_at) VALUES (?, ?, ?, false, ?, ?) IF NOT EXISTS USING TTL ?";
    dedup_get: Read = "SELECT holder, completed, lease_until, expires_at, TTL(holder) AS remaining \
        FROM dedup WHERE company_id = ? AND dedup_key = ?";
    dedup_set: Lwt = "UPDATE dedup USING TTL ? SET holder = ?, completed = ?, lease_until = ?, \
        expires_at = ? WHERE company_id = ? AND dedup_key = ? \
        IF holder = ? AND completed = ? AND lease_until = ? AND expires_at = ?";
    dedup_release: Lwt = "DELETE FROM dedup WHERE company_id = ? AND dedup_key = ? \
        IF holder = ? AND completed = false";

    // ---- calls -------------------------------------------------------------------------
    call_insert: Lwt = concat!("INSERT INTO calls (", call_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS");
    call_update: Lwt = "UPDATE calls SET branch_id = ?, agent_id = ?, direction = ?, \
        from_number = ?, to_number = ?, status = ?, start_at = ?, end_at = ?, duration_ms = ?, \
        disconnection_reason = ?, summary = ?, last_event = ?, version = ?, updated_at = ?, \
        write_id = ? WHERE company_id = ? AND call_id = ? IF write_id = ?";
    call_get: Read = concat!("SELECT ", call_cols!(),
        " FROM calls WHERE company_id = ? AND call_id = ?");
    call_status_insert: Write = "INSERT INTO calls_by_status (company_id, status, call_id) \
        VALUES (?, ?, ?)";
    call_status_delete: Write = "DELETE FROM calls_by_status USING TIMESTAMP ? \
        WHERE company_id = ? AND status = ? AND call_id = ?";
    call_status_list: Read = "SELECT call_id FROM calls_by_status \
        WHERE company_id = ? AND status = ?";

    // ---- appointments ------------------------------------------------------------------
    appointment_insert: Lwt = concat!("INSERT INTO appointments (", appointment_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
        IF NOT EXISTS");
    appointment_update: Lwt = "UPDATE appointments SET calcom_uid = ?, branch_id = ?, \
        service_id = ?, customer_id = ?, status = ?, start_at = ?, end_at = ?, title = ?, \
        attendee_name = ?, attendee_email = ?, attendee_phone = ?, timezone = ?, \
        rescheduled_to_uid = ?, idempotency_key = ?, sync_attempts = ?, last_error = ?, \
        source_event = ?, version = ?, created_at = ?, updated_at = ?, write_id = ?, \
        contact_source = ? WHERE company_id = ? AND appointment_id = ? IF write_id = ?";
    appointment_get: Read = concat!("SELECT ", appointment_cols!(),
        " FROM appointments WHERE company_id = ? AND appointment_id = ?");
    appointment_uid_claim: Lwt = "INSERT INTO appointment_uids (company_id, calcom_uid, \
        appointment_id, claimed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    appointment_uid_get: Read = "SELECT appointment_id, claimed_at FROM appointment_uids \
        WHERE company_id = ? AND calcom_uid = ?";
    appointment_uid_takeover: Lwt = "UPDATE appointment_uids SET appointment_id = ?, \
        claimed_at = ? WHERE company_id = ? AND calcom_uid = ? IF appointment_id = ?";
    appointment_key_claim: Lwt = "INSERT INTO appointment_keys (company_id, idempotency_key, \
        appointment_id, claimed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    appointment_key_get: Read = "SELECT appointment_id, claimed_at FROM appointment_keys \
        WHERE company_id = ? AND idempotency_key = ?";
    appointment_key_takeover: Lwt = "UPDATE appointment_keys SET appointment_id = ?, \
        claimed_at = ? WHERE company_id = ? AND idempotency_key = ? IF appointment_id = ?";
    appointment_status_insert: Write = "INSERT INTO appointments_by_status (company_id, status, \
        created_at, appointment_id) VALUES (?, ?, ?, ?)";
    appointment_status_delete: Write = "DELETE FROM appointments_by_status USING TIMESTAMP ? \
        WHERE company_id = ? AND status = ? AND created_at = ? AND appointment_id = ?";
    appointment_status_list: Read = "SELECT created_at, appointment_id FROM appointments_by_status \
        WHERE company_id = ? AND status = ?";
    appointment_branch_insert: Write = "INSERT INTO appointments_by_branch_date (company_id, \
        branch_id, day, start_at, appointment_id) VALUES (?, ?, ?, ?, ?)";
    appointment_branch_delete: Write = "DELETE FROM appointments_by_branch_date USING TIMESTAMP ? \
        WHERE company_id = ? AND branch_id = ? AND day = ? AND start_at = ? AND appointment_id = ?";
    appointment_customer_insert: Write = "INSERT INTO appointments_by_customer (company_id, \
        customer_id, created_at, appointment_id) VALUES (?, ?, ?, ?)";
    appointment_customer_delete: Write = "DELETE FROM appointments_by_customer USING TIMESTAMP ? \
        WHERE company_id = ? AND customer_id = ? AND created_at = ? AND appointment_id = ?";

    // ---- health ------------------------------------------------------------------------
    health: Read = "SELECT release_version FROM system.local";

    // ---- tenant API keys ---------------------------------------------------------------
    api_key_id_claim: Lwt = "INSERT INTO api_key_ids (key_id, key_hash) VALUES (?, ?) \
        IF NOT EXISTS";
    api_key_id_get: Read = "SELECT key_hash FROM api_key_ids WHERE key_id = ?";
    api_key_company_insert: Write = "INSERT INTO company_api_keys (company_id, key_id, key_hash) \
        VALUES (?, ?, ?)";
    api_key_company_list: Read = "SELECT key_hash FROM company_api_keys WHERE company_id = ?";
    api_key_insert: Lwt = "INSERT INTO api_keys (key_hash, key_id, company_id, name, created_at, \
        revoked_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    api_key_get: Read = "SELECT key_hash, key_id, company_id, name, created_at, revoked_at \
        FROM api_keys WHERE key_hash = ?";
    api_key_revoke: Lwt = "UPDATE api_keys SET revoked_at = ? WHERE key_hash = ? \
        IF revoked_at = null";
}
