-- hotdata state schema, version 0001.
-- Applied by `hotdata db upgrade` (and at `hotdata serve` start-up) inside one transaction.

CREATE TABLE hotdata.analyses (
    id            bigserial PRIMARY KEY,
    requested_by  text,
    channel       text,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'done', 'failed')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    report        jsonb,
    markdown      text,
    error         text
);
-- One running analysis per channel: a second request finds the first instead of duplicating it.
CREATE UNIQUE INDEX analyses_one_running_per_channel
    ON hotdata.analyses (coalesce(channel, '')) WHERE status = 'running';

CREATE TABLE hotdata.proposals (
    id            bigserial PRIMARY KEY,
    analysis_id   bigint REFERENCES hotdata.analyses (id),
    table_name    text NOT NULL,
    index_name    text NOT NULL,
    sql           text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'applying', 'applied',
                                    'rejected', 'failed', 'expired')),
    proposed_by   text,
    decided_by    text,
    decided_at    timestamptz,
    reason        text,
    evidence      jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    channel       text,
    message_ts    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proposals_status ON hotdata.proposals (status, created_at);

-- Append-only: who decided what, every refusal, every outcome.
CREATE TABLE hotdata.audit_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL,
    action        text NOT NULL,
    proposal_id   bigint REFERENCES hotdata.proposals (id),
    sql           text,
    outcome       text,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_proposal ON hotdata.audit_log (proposal_id, at);

CREATE FUNCTION hotdata.audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'hotdata.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON hotdata.audit_log
    FOR EACH ROW EXECUTE FUNCTION hotdata.audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON hotdata.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION hotdata.audit_log_is_append_only();

CREATE TABLE hotdata.drills (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'passed', 'failed')),
    requested_by     text,
    scratch_database text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    rto_seconds      double precision,
    rpo_seconds      double precision,
    result           jsonb
);

-- One row per scheduled slot: the unique key makes each slot run exactly once.
CREATE TABLE hotdata.job_runs (
    job            text NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'succeeded', 'failed', 'missed')),
    runner         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    detail         text,
    PRIMARY KEY (job, scheduled_for)
);
