-- hotdata state schema, version 0004: pgBackRest drills restore a whole cluster.

-- A drill's scratch is either a database on the scratch server (`database`: name is the
-- database) or a private data directory with its own server (`cluster`: name is the directory,
-- server the host it lives on). Either is removed only because it is recorded here.
ALTER TABLE hotdata.drill_databases
    ADD COLUMN kind text NOT NULL DEFAULT 'database' CHECK (kind IN ('database', 'cluster'));
