-- The relay takes an outbox row only when no live worker holds it. The record agent's fast
-- path holds its batch's row while it publishes, renewing leased_until every few seconds,
-- and deletes the row once Kafka has the events; a worker that dies stops renewing, and its
-- rows become the relay's when their lease runs out. NULL: held until created_at plus the
-- lease (OUTBOX_RELAY_MIN_AGE_SECONDS), the rule before this column. An age alone said
-- nothing of the worker: a fast path still retrying past it had its events published twice.
ALTER TABLE payment_service.outbox ADD COLUMN leased_until TIMESTAMPTZ;
