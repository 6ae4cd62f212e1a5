-- A record batch in one round trip. The record agent's transaction took seven (BEGIN, the
-- claim, the retention watermark, COPY's two, the outbox row, COMMIT): under load, with
-- batches of a few webhooks, those round trips were most of a batch's time. This function
-- does the same statements, in the same order, as one statement: it commits or rolls back
-- as a whole. Each statement in it reads a fresh snapshot (READ COMMITTED, a VOLATILE
-- function), as the separate round trips did: the watermark is read after the claim.
--
-- It handles the common case only. When a claimed reference was recorded before reference
-- retention removed it (a late duplicate), it raises SQLSTATE PSLAT and changes nothing: the
-- caller records that batch the long way (app/recording/payment_store.py), which restores
-- the first payment's reference.
--
-- Returns one row per reference of the batch: claimed (recorded now), or taken with the
-- payment_id and fingerprint it already holds. The payments and the outbox row hold only
-- the claimed ones, the events in the order given.
CREATE OR REPLACE FUNCTION payment_service.record_batch(
  p_references VARCHAR[],
  p_payment_ids UUID[],
  p_payment_dates TIMESTAMP[],
  p_fingerprints TEXT[],
  p_loan_account_numbers VARCHAR[],
  p_cifs VARCHAR[],
  p_amounts NUMERIC[],
  p_payment_channels VARCHAR[],
  p_sources VARCHAR[],
  p_metadata JSONB[],
  p_currencies VARCHAR[],
  p_batch_id UUID,
  p_topic TEXT,
  p_event_ids UUID[],
  p_message_keys BYTEA[],
  p_payloads BYTEA[],
  p_late_margin INTERVAL
)
RETURNS TABLE (reference_number VARCHAR, claimed BOOLEAN, payment_id UUID, fingerprint TEXT)
LANGUAGE plpgsql
VOLATILE
AS $$
#variable_conflict use_column
DECLARE
  v_claimed VARCHAR[];
  v_pruned_before TIMESTAMP;
BEGIN
  WITH claim AS (
    INSERT INTO payment_service.payment_references AS r
      (reference_number, payment_id, payment_date, fingerprint)
    SELECT t.ref, t.id, t.day, t.fp
    FROM unnest(p_references, p_payment_ids, p_payment_dates, p_fingerprints) AS t(ref, id, day, fp)
    ORDER BY t.ref  -- one lock order for every batch, so two workers cannot deadlock
    ON CONFLICT ON CONSTRAINT payment_references_pkey DO NOTHING
    RETURNING r.reference_number
  )
  SELECT coalesce(array_agg(claim.reference_number), '{}') INTO v_claimed FROM claim;

  IF cardinality(v_claimed) > 0 THEN
    SELECT w.pruned_before INTO v_pruned_before FROM payment_service.reference_retention AS w;
    IF v_pruned_before IS NOT NULL AND EXISTS (
      SELECT 1 FROM payment_service.payments AS p
      WHERE p.reference_number = ANY (v_claimed)
        AND p.payment_date < v_pruned_before + p_late_margin
    ) THEN
      RAISE EXCEPTION 'a claimed reference was recorded before reference retention removed it'
        USING ERRCODE = 'PSLAT';
    END IF;

    INSERT INTO payment_service.payments
      (id, reference_number, loan_account_number, cif, amount, payment_date, payment_channel,
       source, metadata, currency)
    SELECT t.id, t.ref, t.loan, t.cif, t.amount, t.day, t.channel, t.source, t.metadata,
           t.currency
    FROM unnest(p_references, p_payment_ids, p_loan_account_numbers, p_cifs, p_amounts,
                p_payment_dates, p_payment_channels, p_sources, p_metadata, p_currencies)
           AS t(ref, id, loan, cif, amount, day, channel, source, metadata, currency)
    JOIN unnest(v_claimed) AS c(ref) ON c.ref = t.ref;

    INSERT INTO payment_service.outbox (batch_id, topic, event_ids, message_keys, payloads)
    SELECT p_batch_id, p_topic, array_agg(t.id ORDER BY t.n), array_agg(t.key ORDER BY t.n),
           array_agg(t.payload ORDER BY t.n)
    FROM unnest(p_references, p_event_ids, p_message_keys, p_payloads)
           WITH ORDINALITY AS t(ref, id, key, payload, n)
    JOIN unnest(v_claimed) AS c(ref) ON c.ref = t.ref;
  END IF;

  RETURN QUERY
    SELECT c.ref, TRUE, NULL::UUID, NULL::TEXT FROM unnest(v_claimed) AS c(ref)
    UNION ALL
    SELECT k.reference_number, FALSE, k.payment_id, k.fingerprint
    FROM payment_service.payment_references AS k
    JOIN (SELECT unnest(p_references) EXCEPT SELECT unnest(v_claimed)) AS t(ref)
      ON k.reference_number = t.ref;
END
$$;
