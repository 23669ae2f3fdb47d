-- outbox-relay: the outbox and dead-letter tables for MySQL 8.0.1+ and
-- MariaDB 10.6+ (both needed for FOR UPDATE SKIP LOCKED).

CREATE TABLE IF NOT EXISTS outbox (
  id          BIGINT AUTO_INCREMENT PRIMARY KEY,
  payload     LONGTEXT NOT NULL,      -- or JSON: sent as its JSON text
  group_key   VARCHAR(128) NULL,      -- optional, FIFO MessageGroupId
  created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS outbox_dead_letter (
  id          BIGINT PRIMARY KEY,
  payload     LONGTEXT NULL,
  group_key   VARCHAR(128) NULL,
  created_at  TIMESTAMP(6) NULL,
  reason      TEXT NOT NULL,
  failed_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Least privilege for the relay's database user (replace relay_user):
-- GRANT SELECT, DELETE ON outbox TO 'relay_user'@'%';
-- GRANT INSERT ON outbox_dead_letter TO 'relay_user'@'%';
