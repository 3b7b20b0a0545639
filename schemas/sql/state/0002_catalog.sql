-- The tenant catalog (services, staff, assignments, customers), the branch's Retell agent and
-- Cal.com connection, a routing version for phone-routing caches, and the appointment model
-- keyed by id with lookups by Cal.com uid, by idempotency key and by status. Same rules as
-- 0001: company_id first in every tenant key; global tables are pointers (routing_version is
-- a single counter row).

-- calcom holds the CalcomConfig as JSON (it carries the tenant's API key: never log it).
ALTER TABLE branches ADD COLUMN retell_agent_id TEXT;
ALTER TABLE branches ADD COLUMN calcom TEXT;

-- One row, bumped by every write that may change phone routing (create/update branch).
CREATE TABLE routing_version (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
-- Existing branches were routed before this counter existed; start it past zero so a
-- cache that saw "no version" (0) refreshes once.
INSERT INTO routing_version (id, version) VALUES (1, 1);

CREATE TABLE services (
    company_id           TEXT    NOT NULL REFERENCES companies (company_id),
    service_id           TEXT    NOT NULL,
    branch_id            TEXT,
    name                 TEXT    NOT NULL,
    duration_minutes     INTEGER NOT NULL CHECK (duration_minutes >= 0),
    price_cents          INTEGER NOT NULL,
    currency             TEXT    NOT NULL,
    calcom_event_type_id INTEGER,
    active               INTEGER NOT NULL,
    metadata             TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (company_id, service_id)
) WITHOUT ROWID;

-- services(company) and the default-service check, oldest first.
CREATE INDEX services_by_created ON services (company_id, created_at, service_id);

CREATE TABLE staff (
    company_id TEXT    NOT NULL REFERENCES companies (company_id),
    staff_id   TEXT    NOT NULL,
    branch_id  TEXT,
    name       TEXT    NOT NULL,
    email      TEXT,
    active     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (company_id, staff_id)
) WITHOUT ROWID;

CREATE INDEX staff_by_created ON staff (company_id, created_at, staff_id);

CREATE TABLE assignments (
    company_id TEXT NOT NULL,
    staff_id   TEXT NOT NULL,
    service_id TEXT NOT NULL,
    PRIMARY KEY (company_id, staff_id, service_id),
    FOREIGN KEY (company_id, staff_id) REFERENCES staff (company_id, staff_id),
    FOREIGN KEY (company_id, service_id) REFERENCES services (company_id, service_id)
) WITHOUT ROWID;

-- Customers are written by the pipeline: no foreign key (see 0001 on why).
CREATE TABLE customers (
    company_id  TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    name        TEXT,
    phone       TEXT,
    email       TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (company_id, customer_id)
) WITHOUT ROWID;

-- A phone number is one customer per tenant (a CQL lookup table in the scale-out mode).
CREATE UNIQUE INDEX customers_by_phone ON customers (company_id, phone) WHERE phone IS NOT NULL;

-- Appointments: recreated because the new created_at is NOT NULL without a sensible
-- constant default; existing rows take their updated_at as creation time.
CREATE TABLE appointments_v2 (
    company_id         TEXT    NOT NULL,
    appointment_id     TEXT    NOT NULL,
    calcom_uid         TEXT,
    branch_id          TEXT,
    service_id         TEXT,
    customer_id        TEXT,
    status             TEXT    NOT NULL,
    start_at           INTEGER,
    end_at             INTEGER,
    title              TEXT,
    attendee_name      TEXT,
    attendee_email     TEXT,
    attendee_phone     TEXT,
    timezone           TEXT,
    rescheduled_to_uid TEXT,
    idempotency_key    TEXT,
    sync_attempts      INTEGER NOT NULL DEFAULT 0 CHECK (sync_attempts >= 0),
    last_error         TEXT,
    source_event       TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (company_id, appointment_id)
);

INSERT INTO appointments_v2 (company_id, appointment_id, calcom_uid, branch_id, status,
    start_at, end_at, title, attendee_name, attendee_email, attendee_phone,
    rescheduled_to_uid, source_event, version, created_at, updated_at)
SELECT company_id, appointment_id, calcom_uid, branch_id, status,
    start_at, end_at, title, attendee_name, attendee_email, attendee_phone,
    rescheduled_to_uid, source_event, version, updated_at, updated_at
FROM appointments;

DROP TABLE appointments;
ALTER TABLE appointments_v2 RENAME TO appointments;

-- Lookups (CQL lookup tables in the scale-out mode); each value is one appointment per tenant.
CREATE UNIQUE INDEX appointments_by_calcom_uid
    ON appointments (company_id, calcom_uid) WHERE calcom_uid IS NOT NULL;
CREATE UNIQUE INDEX appointments_by_key
    ON appointments (company_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- appointments(company) and appointments_by_status(company, status), oldest first.
CREATE INDEX appointments_by_created ON appointments (company_id, created_at, appointment_id);
CREATE INDEX appointments_by_status
    ON appointments (company_id, status, created_at, appointment_id);
