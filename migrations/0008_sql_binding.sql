-- hotdata state schema, version 0008: each proposal is bound to the exact statement approved,
-- re-checked against the table the approver saw, and approved by as many managers as it needs.

-- The SHA-256 (hex) of the statement the card shows and the Approve button carries, and of the
-- migration file written for it; an apply refuses a statement whose digest is not the approved
-- one (a state row edited after the card was posted).
ALTER TABLE hotdata.proposals ADD COLUMN sql_sha256 text, ADD COLUMN file_sha256 text;
UPDATE hotdata.proposals SET sql_sha256 = encode(sha256(convert_to(sql, 'UTF8')), 'hex');
ALTER TABLE hotdata.proposals ALTER COLUMN sql_sha256 SET NOT NULL;

-- The table's size when it was proposed (what the approver saw): an apply finding it grown past
-- HOTDATA_APPLY_GROWTH_LIMIT times that asks again. `superseded`: a newer proposal's index serves
-- all it would. And `unneeded`: at apply time an equivalent
-- index already served it, so nothing was built.
ALTER TABLE hotdata.proposals ADD COLUMN table_bytes bigint;
ALTER TABLE hotdata.proposals DROP CONSTRAINT proposals_status_check;
ALTER TABLE hotdata.proposals ADD CONSTRAINT proposals_status_check
    CHECK (status IN ('pending', 'approved', 'applying', 'applied', 'rejected', 'failed',
                      'expired', 'unneeded', 'superseded'));

-- The two-person rule: how many distinct managers a proposal needs (set when proposed, from
-- HOTDATA_APPROVALS_REQUIRED and HOTDATA_APPROVALS_REQUIRED_OVER_MB), and each manager's
-- approval of a statement digest; only approvals of the current statement count.
ALTER TABLE hotdata.proposals
    ADD COLUMN approvals_required int NOT NULL DEFAULT 1 CHECK (approvals_required >= 1);
CREATE TABLE hotdata.approvals (
    proposal_id   bigint NOT NULL REFERENCES hotdata.proposals (id),
    manager       text NOT NULL,
    sql_sha256    text NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (proposal_id, sql_sha256, manager)
);
