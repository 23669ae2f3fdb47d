-- outbox-relay: the outbox and dead-letter tables for MySQL 8.0.1+ and
-- MariaDB 10.6+ (both needed for FOR UPDATE SKIP LOCKED).

CREATE TABLE IF NOT EXISTS outbox (
  id          BIGINT AUTO_INCREMENT PRIMARY KEY,
  payload     LONGTEXT NOT NULL,      -- or JSON: sent as its JSON text
  group_key   VARCHAR(128) NULL,      -- optional, FIFO MessageGroupId
  created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
  -- Optional message shaping columns (docs/operations.md "Message shaping"); add those
  -- you use and name them in the relay's environment:
  -- , route        VARCHAR(255) NULL  -- OUTBOX_QUEUE_COLUMN: a key of QUEUE_ROUTES
  -- , attributes   JSON NULL          -- OUTBOX_ATTRIBUTES_COLUMN: {"name": "value"}
  -- , trace_header VARCHAR(1024) NULL -- OUTBOX_TRACE_COLUMN: X-Ray header or traceparent
  -- , not_before   TIMESTAMP(6) NULL  -- OUTBOX_NOT_BEFORE_COLUMN: not sent before
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS outbox_dead_letter (
  id          BIGINT PRIMARY KEY,
  payload     LONGTEXT NULL,
  group_key   VARCHAR(128) NULL,
  created_at  TIMESTAMP(6) NULL,
  reason      TEXT NOT NULL,
  failed_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
  -- A quarantined row keeps each shaping column the dead-letter table has
  -- under the outbox's name, so a replay sends it as it was meant to go:
  -- , route        VARCHAR(255) NULL
  -- , attributes   LONGTEXT NULL
  -- , trace_header VARCHAR(1024) NULL
  -- , not_before   TIMESTAMP(6) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The audit of `outbox-relay dead-letters replay` (OUTBOX_REPLAY_TABLE):
-- how often each id was replayed, and when last.
CREATE TABLE IF NOT EXISTS outbox_replay (
  id                VARCHAR(255) PRIMARY KEY,
  replay_count      INT NOT NULL,
  last_replayed_at  TIMESTAMP(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Least privilege for the relay's database user (replace relay_user):
-- GRANT SELECT, DELETE ON outbox TO 'relay_user'@'%';
-- GRANT INSERT ON outbox_dead_letter TO 'relay_user'@'%';
-- An operator who replays dead letters needs more:
-- GRANT SELECT, INSERT ON outbox TO 'operator_user'@'%';
-- GRANT SELECT, DELETE ON outbox_dead_letter TO 'operator_user'@'%';
-- GRANT SELECT, INSERT, UPDATE ON outbox_replay TO 'operator_user'@'%';
