-- The service's own tables: payments (monthly partitions), the reference authority,
-- the staging batch log, and the outbox that ties events to committed rows.
CREATE SCHEMA IF NOT EXISTS payment_service;

CREATE TABLE payment_service.payments (
  id UUID DEFAULT gen_random_uuid(),
  reference_number VARCHAR(255) NOT NULL,
  loan_account_number VARCHAR(20) NOT NULL,
  cif VARCHAR(20) NOT NULL,
  amount DECIMAL(15,2) NOT NULL,
  payment_date TIMESTAMP NOT NULL,
  payment_channel VARCHAR(100),
  source VARCHAR(50) NOT NULL CHECK (source IN ('staging', 'webhook')),
  metadata JSONB,
  created_at TIMESTAMP DEFAULT NOW(),
  PRIMARY KEY (id, payment_date)
) PARTITION BY RANGE (payment_date);

CREATE INDEX idx_payments_reference ON payment_service.payments (reference_number);
CREATE INDEX idx_payments_loan_account ON payment_service.payments (loan_account_number, payment_date DESC);
CREATE INDEX idx_payments_cif ON payment_service.payments (cif, payment_date DESC);
CREATE INDEX idx_payments_created_at ON payment_service.payments (created_at);

-- The authority on "seen before": one row per reference, ever (until retention).
-- fingerprint tells a duplicate (same payment) from a conflict (same reference, other content).
CREATE TABLE payment_service.payment_references (
  reference_number VARCHAR(255) PRIMARY KEY,
  payment_id UUID NOT NULL,
  payment_date TIMESTAMP NOT NULL,
  fingerprint TEXT NOT NULL,
  created_at TIMESTAMP DEFAULT NOW()
);
CREATE INDEX idx_payment_refs_created ON payment_service.payment_references (created_at);

CREATE TABLE payment_service.staging_process_log (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  batch_start_id BIGINT NOT NULL,
  batch_end_id BIGINT NOT NULL,
  total_records INTEGER NOT NULL,
  processed_records INTEGER DEFAULT 0,
  duplicate_records INTEGER DEFAULT 0,
  error_records INTEGER DEFAULT 0,
  status VARCHAR(50) DEFAULT 'processing' CHECK (status IN ('processing', 'completed', 'failed')),
  started_at TIMESTAMP DEFAULT NOW(),
  completed_at TIMESTAMP,
  error_details JSONB
);
CREATE INDEX idx_staging_log_started ON payment_service.staging_process_log (started_at DESC);

-- Transactional outbox: written in the same transaction as the payment row; the agent
-- publishes and sets sent_at, and a relay republishes what a crash left unsent.
-- payload is `json` (not jsonb) so the relay sends the very bytes first written.
CREATE TABLE payment_service.outbox (
  event_id UUID PRIMARY KEY,
  payment_id UUID NOT NULL,
  topic TEXT NOT NULL,
  message_key TEXT NOT NULL,
  payload JSON NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  sent_at TIMESTAMPTZ
);
CREATE INDEX idx_outbox_unsent ON payment_service.outbox (created_at) WHERE sent_at IS NULL;
CREATE INDEX idx_outbox_payment ON payment_service.outbox (payment_id);
