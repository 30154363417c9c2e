-- hotdata state schema, version 0010: backups that stopped, noticed without a drill.

-- One row per thing watched at every statistics snapshot: `backup` (the newest backup's age)
-- and `archiving` (WAL archiving, from pg_stat_archiver). `alerting` flips only under the row's
-- lock, together with the message saying so, so a problem is announced once when it starts and
-- once when it ends, whichever replica checks. `figures` is the last check, for the report.
CREATE TABLE hotdata.backup_alerts (
    kind        text PRIMARY KEY,
    alerting    boolean NOT NULL DEFAULT false,
    changed_at  timestamptz,
    checked_at  timestamptz,
    figures     jsonb NOT NULL DEFAULT '{}'
);
INSERT INTO hotdata.backup_alerts (kind) VALUES ('backup'), ('archiving');
