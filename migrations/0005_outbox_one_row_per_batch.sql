-- One outbox row per recorded batch instead of one per event. The record agent writes
-- the events of a batch in the same transaction as their payments (as before), but as
-- three arrays in one row: no JSON parsing, no index entry per event, and one DELETE
-- once Kafka has them all (bench/staging: the outbox was a third of Postgres' work).
-- payloads are the exact bytes to publish; EXTERNAL storage skips compressing them.
CREATE TABLE payment_service.outbox_batches (
  batch_id UUID PRIMARY KEY,
  topic TEXT NOT NULL,
  event_ids UUID[] NOT NULL,
  message_keys BYTEA[] NOT NULL,
  payloads BYTEA[] NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CHECK (cardinality(event_ids) = cardinality(message_keys)
         AND cardinality(event_ids) = cardinality(payloads))
);
ALTER TABLE payment_service.outbox_batches ALTER COLUMN payloads SET STORAGE EXTERNAL;
CREATE INDEX idx_outbox_batches_created ON payment_service.outbox_batches (created_at);

-- Events still unsent when this runs keep their bytes (as the relay sent them before).
INSERT INTO payment_service.outbox_batches
  (batch_id, topic, event_ids, message_keys, payloads, created_at)
SELECT gen_random_uuid(), topic,
       array_agg(event_id ORDER BY created_at, event_id),
       array_agg(convert_to(message_key, 'UTF8') ORDER BY created_at, event_id),
       array_agg(convert_to(payload::text, 'UTF8') ORDER BY created_at, event_id),
       min(created_at)
FROM payment_service.outbox
GROUP BY topic;

DROP TABLE payment_service.outbox;
ALTER TABLE payment_service.outbox_batches RENAME TO outbox;
ALTER INDEX payment_service.idx_outbox_batches_created RENAME TO idx_outbox_created;
ALTER TABLE payment_service.outbox RENAME CONSTRAINT outbox_batches_pkey TO outbox_pkey;
