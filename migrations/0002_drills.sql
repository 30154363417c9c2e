-- hotdata state schema, version 0002: restore drills.

-- The heartbeat the RPO is measured with: written every minute on the target (in hotdata's
-- own schema); a restored copy's heartbeat tells how much time its data is missing.
CREATE TABLE hotdata.heartbeat (
    id  int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Scratch databases a drill created: the only databases hotdata ever drops.
CREATE TABLE hotdata.drill_databases (
    name        text PRIMARY KEY,
    drill_id    bigint REFERENCES hotdata.drills (id),
    server      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    dropped_at  timestamptz
);
