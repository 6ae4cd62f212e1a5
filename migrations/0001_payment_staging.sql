-- IF NOT EXISTS: the ETL owns this table and may have created it before the service arrived.
-- The staging table the ETL fills (the plan's columns). The poller claims unprocessed rows by id.
-- processed is NOT NULL: a NULL would be a row no poller ever picks up, so it is refused at insert.
CREATE TABLE IF NOT EXISTS public.payment_staging (
  id BIGSERIAL PRIMARY KEY,
  reference_number VARCHAR(255) NOT NULL,
  loan_account_number VARCHAR(20) NOT NULL,
  cif VARCHAR(20) NOT NULL,
  amount DECIMAL(15,2) NOT NULL,
  payment_date TIMESTAMP NOT NULL,
  payment_channel VARCHAR(100),
  metadata JSONB,
  processed BOOLEAN NOT NULL DEFAULT FALSE,
  processed_at TIMESTAMP,
  created_at TIMESTAMP DEFAULT NOW()
);

-- The backlog: small and hot while the table itself grows without bound.
CREATE INDEX IF NOT EXISTS idx_payment_staging_unprocessed
  ON public.payment_staging (id) WHERE NOT processed;
