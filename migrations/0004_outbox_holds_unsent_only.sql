-- The outbox holds only events not yet acknowledged by Kafka: the agent deletes its rows
-- once the broker has the events (it used to set sent_at). An UPDATE rewrote every row with
-- its payload and new index entries; a DELETE touches neither (bench/staging: Postgres' share
-- of the pipeline). The relay republishes whatever is older than its minimum age.
DELETE FROM payment_service.outbox WHERE sent_at IS NOT NULL;
DROP INDEX IF EXISTS payment_service.idx_outbox_unsent;
DROP INDEX IF EXISTS payment_service.idx_outbox_payment;
ALTER TABLE payment_service.outbox DROP COLUMN sent_at;
CREATE INDEX idx_outbox_created ON payment_service.outbox (created_at);
