-- The embedded log (log.db): records, consumer-group offsets and the log's own settings.
-- Mirrors Kafka: a record lives at (partition, offset); offsets are dense per partition and
-- assigned at append time; groups commit "the next offset to read" per partition.

-- Settings fixed at first open, e.g. `partitions` (a reopen with another count is refused,
-- since every tenant would hash onto a different partition).
CREATE TABLE log_meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- headers: JSON object of the record's headers (RecordMeta::to_headers), name -> value.
-- value: the exact raw webhook body. appended_at: ms since the Unix epoch (UTC).
-- WITHOUT ROWID clusters a partition's records by offset, which is the only read pattern.
CREATE TABLE log_records (
    partition   INTEGER NOT NULL CHECK (partition >= 0),
    offset      INTEGER NOT NULL CHECK (offset >= 0),
    headers     TEXT    NOT NULL,
    value       BLOB    NOT NULL,
    appended_at INTEGER NOT NULL,
    PRIMARY KEY (partition, offset)
) WITHOUT ROWID;

-- next_offset: the first offset the group has not processed yet.
CREATE TABLE consumer_offsets (
    group_id    TEXT    NOT NULL,
    partition   INTEGER NOT NULL CHECK (partition >= 0),
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, partition)
) WITHOUT ROWID;
