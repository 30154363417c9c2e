-- hotdata state schema, version 0006: schema-review sandboxes.

-- A schema review runs a member's plan in a throwaway database, as a throwaway role of the same
-- name, on the scratch server. Each is recorded here before it is created, so one that a crash
-- left behind is dropped at the next start (its process holds an advisory lock while it runs).
CREATE TABLE hotdata.review_databases (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    server        text NOT NULL,
    requested_by  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dropped_at    timestamptz
);
