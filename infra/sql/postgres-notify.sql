-- outbox-relay: wake followers at once when rows are inserted (PostgreSQL).
-- Optional: without it `outbox-relay follow` and a following Lambda find
-- new rows at their next poll (POLL_INTERVAL_MS). With it, set
-- OUTBOX_NOTIFY_CHANNEL=outbox_relay on the relay.
--
-- A statement-level trigger: one pg_notify per inserting statement, so a
-- bulk insert of 10,000 rows notifies once, not 10,000 times. PostgreSQL
-- delivers the notification when the inserting transaction commits (never
-- for a rollback), which is exactly when the rows become visible, and
-- folds identical notifications of one transaction into one. The payload
-- is empty: the relay reads rows from the table, never from the message.
--
-- The channel is the trigger's argument; it must equal
-- OUTBOX_NOTIFY_CHANNEL exactly (case included). Replace outbox with your
-- table's name.

CREATE OR REPLACE FUNCTION outbox_relay_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], '');
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbox_relay_notify ON outbox;
CREATE TRIGGER outbox_relay_notify
  AFTER INSERT ON outbox
  FOR EACH STATEMENT
  EXECUTE FUNCTION outbox_relay_notify('outbox_relay');
