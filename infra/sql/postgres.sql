-- outbox-relay: the outbox and dead-letter tables for PostgreSQL.
-- Your service inserts into outbox in the same transaction as its own
-- change; the relay sends each row to SQS once and deletes it. Rows that can
-- never be sent are moved to outbox_dead_letter with the reason.

CREATE TABLE IF NOT EXISTS outbox (
  id          BIGSERIAL PRIMARY KEY,
  payload     TEXT NOT NULL,          -- or JSONB: sent as its JSON text
  group_key   TEXT,                   -- optional, FIFO MessageGroupId
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox_dead_letter (
  id          BIGINT PRIMARY KEY,
  payload     TEXT,
  group_key   TEXT,
  created_at  TIMESTAMPTZ,
  reason      TEXT NOT NULL,
  failed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Least privilege for the relay's database user (replace relay_user):
-- GRANT SELECT, DELETE ON outbox TO relay_user;
-- GRANT INSERT ON outbox_dead_letter TO relay_user;
