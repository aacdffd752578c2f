-- A create's Idempotency-Key names one request body: keep a fingerprint of the body the key
-- was first used with, so a reuse with a different body is refused (422) instead of
-- silently answering the first deal.
ALTER TABLE deals ADD COLUMN idempotency_fingerprint text;
