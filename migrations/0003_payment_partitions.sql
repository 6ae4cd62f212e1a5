-- Monthly partitions of payments: a function that creates one month's partition if it is
-- missing (safe when several workers ask at once), and the initial window of 3 months back
-- and 3 ahead. Partition maintenance and the record agent call the same function.
CREATE OR REPLACE FUNCTION payment_service.ensure_payment_partition(p_month DATE)
RETURNS TEXT
LANGUAGE plpgsql
AS $$
DECLARE
  v_start DATE := date_trunc('month', p_month)::DATE;
  v_end DATE := (date_trunc('month', p_month) + INTERVAL '1 month')::DATE;
  v_name TEXT := 'payments_' || to_char(v_start, 'YYYY_MM');
BEGIN
  -- CREATE TABLE IF NOT EXISTS still races on the catalog: serialize creators.
  PERFORM pg_advisory_xact_lock(hashtext('payment_service.payments partitions'));
  IF to_regclass(format('payment_service.%I', v_name)) IS NULL THEN
    EXECUTE format(
      'CREATE TABLE payment_service.%I PARTITION OF payment_service.payments FOR VALUES FROM (%L) TO (%L)',
      v_name, v_start, v_end);
  END IF;
  RETURN v_name;
END
$$;

SELECT payment_service.ensure_payment_partition(month::DATE)
FROM generate_series(
  date_trunc('month', now()) - INTERVAL '3 months',
  date_trunc('month', now()) + INTERVAL '3 months',
  INTERVAL '1 month'
) AS month;
