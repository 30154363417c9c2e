-- hotdata state schema, version 0012: each analysis keeps every statement's plan shape per
-- role, and the planner settings it ran under, so that the next one sees plan regressions.
ALTER TABLE hotdata.analyses ADD COLUMN planner_settings jsonb;

CREATE TABLE hotdata.plan_shapes (
    analysis_id  bigint NOT NULL REFERENCES hotdata.analyses (id) ON DELETE CASCADE,
    statement    text NOT NULL,   -- what makes two texts the same statement
    role         text NOT NULL,   -- owner | app
    query        text NOT NULL,
    fingerprint  text NOT NULL,   -- sha256 of the node types, relations and indexes, top down
    nodes        jsonb NOT NULL,  -- each node's type, relation, index, estimated/actual rows
    summary      text NOT NULL,
    ms           double precision, -- measured (EXPLAIN ANALYZE); NULL when only planned
    PRIMARY KEY (analysis_id, statement, role)
);
CREATE INDEX plan_shapes_statement ON hotdata.plan_shapes (statement, role, analysis_id DESC);
