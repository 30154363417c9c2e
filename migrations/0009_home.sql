-- hotdata state schema, version 0009: who opened hotdata's App Home lately, so that a change
-- (a proposal decided, applied, expired) is published to their Home too.
CREATE TABLE hotdata.home_viewers (
    user_id    text PRIMARY KEY,
    opened_at  timestamptz NOT NULL DEFAULT now()
);
