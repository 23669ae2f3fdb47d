-- outbox-relay: the outbox and dead-letter tables for PostgreSQL.
-- Your service inserts into outbox in the same transaction as its own
-- change; the relay sends each row to SQS once and deletes it. Rows that can
-- never be sent are moved to outbox_dead_letter with the reason.

CREATE TABLE IF NOT EXISTS outbox (
  id          BIGSERIAL PRIMARY KEY,
  payload     TEXT NOT NULL,          -- or JSONB: sent as its JSON text
  group_key   TEXT,                   -- optional, FIFO MessageGroupId
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
  -- Optional message shaping columns (docs/operations.md "Message shaping"); add those
  -- you use and name them in the relay's environment:
  -- , route        TEXT           -- OUTBOX_QUEUE_COLUMN: a key of QUEUE_ROUTES
  -- , attributes   JSONB          -- OUTBOX_ATTRIBUTES_COLUMN: {"name": "value"}
  -- , trace_header TEXT           -- OUTBOX_TRACE_COLUMN: X-Ray header or traceparent
  -- , not_before   TIMESTAMPTZ    -- OUTBOX_NOT_BEFORE_COLUMN: not sent before
);

CREATE TABLE IF NOT EXISTS outbox_dead_letter (
  id          BIGINT PRIMARY KEY,
  payload     TEXT,
  group_key   TEXT,
  created_at  TIMESTAMPTZ,
  reason      TEXT NOT NULL,
  failed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
  -- A quarantined row keeps each shaping column the dead-letter table has
  -- under the outbox's name, so a replay sends it as it was meant to go:
  -- , route        TEXT
  -- , attributes   TEXT
  -- , trace_header TEXT
  -- , not_before   TIMESTAMPTZ
);

-- The audit of `outbox-relay dead-letters replay` (OUTBOX_REPLAY_TABLE):
-- how often each id was replayed, and when last.
CREATE TABLE IF NOT EXISTS outbox_replay (
  id                TEXT PRIMARY KEY,
  replay_count      INTEGER NOT NULL,
  last_replayed_at  TIMESTAMPTZ NOT NULL
);

-- Least privilege for the relay's database user (replace relay_user):
-- GRANT SELECT, DELETE ON outbox TO relay_user;
-- GRANT INSERT ON outbox_dead_letter TO relay_user;
-- An operator who replays dead letters needs more:
-- GRANT SELECT, INSERT ON outbox TO operator_user;
-- GRANT SELECT, DELETE ON outbox_dead_letter TO operator_user;
-- GRANT SELECT, INSERT, UPDATE ON outbox_replay TO operator_user;
