-- hotdata state schema, version 0003: statistics snapshots, replicas and missed slots.

-- Periodic copies of pg_stat_statements and the table counters, so a report covers its own
-- window (deltas) and survives pg_stat_statements_reset() and server restarts.
CREATE TABLE hotdata.snapshots (
    id                bigserial PRIMARY KEY,
    taken_at          timestamptz NOT NULL DEFAULT now(),
    statements_reset  timestamptz,
    server_started    timestamptz
);
CREATE INDEX snapshots_taken_at ON hotdata.snapshots (taken_at);

CREATE TABLE hotdata.snapshot_statements (
    snapshot_id  bigint NOT NULL REFERENCES hotdata.snapshots (id) ON DELETE CASCADE,
    queryid      text NOT NULL,
    query        text NOT NULL,
    calls        bigint NOT NULL,
    total_ms     double precision NOT NULL,
    rows         bigint NOT NULL,
    PRIMARY KEY (snapshot_id, queryid)
);

CREATE TABLE hotdata.snapshot_tables (
    snapshot_id  bigint NOT NULL REFERENCES hotdata.snapshots (id) ON DELETE CASCADE,
    relation     text NOT NULL,
    inserts      bigint NOT NULL,
    updates      bigint NOT NULL,
    deletes      bigint NOT NULL,
    seq_scans    bigint NOT NULL,
    idx_scans    bigint NOT NULL,
    PRIMARY KEY (snapshot_id, relation)
);

-- Which replicas run, and which one leads (holds the leader advisory lock).
CREATE TABLE hotdata.replicas (
    name        text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    leader      boolean NOT NULL DEFAULT false
);
