-- hotdata state schema, version 0007: one open proposal per index, enforced by the schema.

-- Duplicates that concurrent proposes could leave before this version: the oldest open
-- proposal of an index stays, younger pending ones expire.
UPDATE hotdata.proposals p
SET status = 'expired', updated_at = now(),
    result = coalesce(p.result, '{}'::jsonb)
             || '{"error": "a duplicate of an older open proposal of the same index"}'::jsonb
WHERE p.status = 'pending'
  AND EXISTS (SELECT FROM hotdata.proposals q
              WHERE q.table_name = p.table_name AND q.index_name = p.index_name
                AND q.status IN ('pending', 'approved', 'applying') AND q.id < p.id);

CREATE UNIQUE INDEX proposals_one_open_per_index ON hotdata.proposals (table_name, index_name)
    WHERE status IN ('pending', 'approved', 'applying');
