-- hotdata state schema, version 0005: a token of this installation.

-- Scratch databases and restore directories are named hotdata_drill_<token>_<drill id>, so two
-- installations sharing a scratch server or a restore directory never pick the same name.
CREATE TABLE hotdata.installation (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    token text NOT NULL DEFAULT left(replace(gen_random_uuid()::text, '-', ''), 10)
);
INSERT INTO hotdata.installation DEFAULT VALUES;
