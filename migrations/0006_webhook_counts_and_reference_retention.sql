-- Webhook requests counted per minute, channel, status and outcome by each process that
-- answers them (the worker and its fronts write their counts in bulk, once a second):
-- GET /api/v1/payments/stats sums today's rows. One row per key and minute and process,
-- not per request, so "today" stays a few thousand rows at any request rate.
CREATE TABLE payment_service.webhook_request_counts (
  minute TIMESTAMPTZ NOT NULL,
  channel VARCHAR(100) NOT NULL,
  status SMALLINT NOT NULL,
  outcome VARCHAR(50) NOT NULL,
  requests INTEGER NOT NULL CHECK (requests > 0),
  response_ms_total DOUBLE PRECISION NOT NULL CHECK (response_ms_total >= 0),
  process VARCHAR(100) NOT NULL
);
CREATE INDEX idx_webhook_counts_minute ON payment_service.webhook_request_counts (minute);

-- Reference retention: payment_references rows created before `pruned_before` may have
-- been removed. From then on a reference Postgres no longer holds is looked up in the
-- payments partitions before it is recorded again, so a late duplicate stays a duplicate
-- (app/payment_store.py). One row, written before the first reference is removed.
CREATE TABLE payment_service.reference_retention (
  id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  pruned_before TIMESTAMP NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The staging stats read today's completed batches.
CREATE INDEX IF NOT EXISTS idx_staging_log_completed
  ON payment_service.staging_process_log (completed_at) WHERE status = 'completed';
