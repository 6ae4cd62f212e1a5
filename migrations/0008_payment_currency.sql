-- The currency is a field of the payment: two charges that differ only by currency are two
-- payments, and a conflict names it. NULL when the input named none (staging rows have no
-- currency column; payments recorded before this migration keep it only in metadata).
-- A nullable column without a default is a catalog change: no partition is rewritten.
ALTER TABLE payment_service.payments ADD COLUMN IF NOT EXISTS currency VARCHAR(3);
