-- Tenant API keys (issue 12). A global pointer table like phone_routes: the SHA-256 (hex) of
-- a key -> its tenant. The key itself is never stored. key_id is the public handle for
-- listing and revoking; revoked keys stay (revoked_at set) so listings show them.
CREATE TABLE api_keys (
    key_hash   TEXT    NOT NULL PRIMARY KEY,
    key_id     TEXT    NOT NULL UNIQUE,
    company_id TEXT    NOT NULL REFERENCES companies (company_id),
    name       TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;

CREATE INDEX api_keys_by_company ON api_keys (company_id, created_at, key_id);
