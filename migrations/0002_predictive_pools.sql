-- 0002_predictive_pools — pools sized by the predictor: the 'predictive' policy and the
-- quantile of forecast demand its pool target covers.
ALTER TABLE pool_policies DROP CONSTRAINT IF EXISTS pool_policies_policy_check;
ALTER TABLE pool_policies ADD CONSTRAINT pool_policies_policy_check
    CHECK (policy IN ('fixed', 'keepalive', 'predictive'));
ALTER TABLE pool_policies ADD COLUMN quantile double precision NOT NULL DEFAULT 0.99
    CHECK (quantile >= 0.5 AND quantile < 1);
