-- The claim's index in "C" (000019) takes the name it had.

-- migrate:up
ALTER INDEX idx_tasks_claim_c RENAME TO idx_tasks_claim;

-- migrate:down
ALTER INDEX idx_tasks_claim RENAME TO idx_tasks_claim_c;
