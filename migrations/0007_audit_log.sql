-- Operator actions, one row each: replays, requeues, partition prunes, secret changes.
-- A row is written when the action starts (outcome 'started') and completed when it ends
-- ('ok' or 'failed' with the error), so an action that died half-way still shows.
-- parameters and result hold what was asked and what it came to: never a secret.
CREATE TABLE payment_service.audit_log (
  id BIGSERIAL PRIMARY KEY,
  started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ,
  actor VARCHAR(200) NOT NULL,
  via VARCHAR(20) NOT NULL CHECK (via IN ('cli', 'http', 'worker')),
  action VARCHAR(100) NOT NULL,
  parameters JSONB NOT NULL DEFAULT '{}',
  outcome VARCHAR(20) NOT NULL DEFAULT 'started' CHECK (outcome IN ('started', 'ok', 'failed')),
  result JSONB
);
CREATE INDEX idx_audit_log_started ON payment_service.audit_log (started_at DESC);
CREATE INDEX idx_audit_log_action ON payment_service.audit_log (action, started_at DESC);
