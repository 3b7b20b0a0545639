-- The embedded state store (state.db), written CQL-minded so the same model maps onto
-- Cassandra/Scylla tables: every tenant table has company_id first in its primary key (the
-- partition key); the only global tables are the pointer tables phone_routes and
-- event_pointers. Timestamps are INTEGER ms since the Unix epoch (UTC), the precision of a
-- CQL `timestamp`. Ids are UUIDs as lowercase hyphenated text, which sorts like the bytes,
-- so UUIDv7 ids sort by creation time.
--
-- Foreign keys only guard the tenant directory (branches, phone routes, secrets). Events,
-- dedup keys, calls and appointments carry none, as in CQL: the quarantine tenant
-- (nil UUID, status `unrouted`) has no companies row, and the pipeline must never fail a
-- write on a missing parent.

CREATE TABLE companies (
    company_id            TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    allow_unsigned_calcom INTEGER NOT NULL,
    created_at            INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE branches (
    company_id TEXT    NOT NULL REFERENCES companies (company_id),
    branch_id  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    phone      TEXT    NOT NULL,
    timezone   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (company_id, branch_id)
) WITHOUT ROWID;

-- Global pointer: E.164 number -> owning tenant and branch. The primary key makes a number
-- belong to at most one branch.
CREATE TABLE phone_routes (
    phone      TEXT NOT NULL PRIMARY KEY,
    company_id TEXT NOT NULL,
    branch_id  TEXT NOT NULL,
    FOREIGN KEY (company_id, branch_id) REFERENCES branches (company_id, branch_id)
) WITHOUT ROWID;

CREATE TABLE secrets (
    company_id TEXT    NOT NULL REFERENCES companies (company_id),
    provider   TEXT    NOT NULL,
    secret_id  TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (company_id, provider, secret_id)
) WITHOUT ROWID;

-- The event ledger. A rowid table on purpose: rows carry the raw payload (often several KB)
-- and SQLite advises against WITHOUT ROWID for rows larger than ~1/20 of a page.
CREATE TABLE events (
    company_id     TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    dedup_key      TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    attempts       INTEGER NOT NULL CHECK (attempts >= 0),
    error          TEXT,
    correlation_id TEXT    NOT NULL,
    secret_id      TEXT    NOT NULL,
    log_partition  INTEGER NOT NULL,
    log_offset     INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    PRIMARY KEY (company_id, event_id)
);

-- events(company, None, limit) and events(company, Some(status), limit), newest first.
CREATE INDEX events_by_received ON events (company_id, received_at DESC, event_id DESC);
CREATE INDEX events_by_status ON events (company_id, status, received_at DESC, event_id DESC);

-- Global pointer: event id -> tenant (find_event).
CREATE TABLE event_pointers (
    event_id   TEXT NOT NULL PRIMARY KEY,
    company_id TEXT NOT NULL
) WITHOUT ROWID;

-- Dedup keys with a lease (lease_until) and a TTL (expires_at); rows at or past expires_at
-- are treated as absent and purged lazily.
CREATE TABLE dedup (
    company_id  TEXT    NOT NULL,
    dedup_key   TEXT    NOT NULL,
    holder      TEXT    NOT NULL,
    completed   INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (company_id, dedup_key)
) WITHOUT ROWID;

CREATE INDEX dedup_by_expiry ON dedup (expires_at);

CREATE TABLE calls (
    company_id           TEXT    NOT NULL,
    call_id              TEXT    NOT NULL,
    branch_id            TEXT,
    agent_id             TEXT,
    direction            TEXT,
    from_number          TEXT,
    to_number            TEXT,
    status               TEXT    NOT NULL,
    start_at             INTEGER,
    end_at               INTEGER,
    duration_ms          INTEGER,
    disconnection_reason TEXT,
    summary              TEXT,
    last_event           TEXT    NOT NULL,
    version              INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (company_id, call_id)
);

CREATE TABLE appointments (
    company_id         TEXT    NOT NULL,
    appointment_id     TEXT    NOT NULL,
    calcom_uid         TEXT,
    branch_id          TEXT,
    status             TEXT    NOT NULL,
    start_at           INTEGER,
    end_at             INTEGER,
    title              TEXT,
    attendee_name      TEXT,
    attendee_email     TEXT,
    attendee_phone     TEXT,
    rescheduled_to_uid TEXT,
    source_event       TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (company_id, appointment_id)
);

-- A Cal.com booking is one appointment per tenant (a CQL lookup table in the scale-out mode).
CREATE UNIQUE INDEX appointments_by_calcom_uid
    ON appointments (company_id, calcom_uid) WHERE calcom_uid IS NOT NULL;

-- One row, rewritten by sync(): the write that makes the WAL fsync (see EmbeddedStore::sync).
-- generation always changes, so the write is never a no-op.
CREATE TABLE sync_barrier (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    synced_at  INTEGER NOT NULL
);
