-- dsgw's store, version 1, for SQLite and PostgreSQL alike. Times are Unix milliseconds (UTC);
-- money is picodollars (1e-12 USD) as BIGINT, so sums are exact; JSON columns are TEXT.
-- USD_DECIMAL is the one word the dialects spell differently (see store::Backend).

CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    labels      TEXT NOT NULL DEFAULT '{}',
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE keys (
    id                      TEXT PRIMARY KEY,
    -- Hex SHA-256 of the secret; the secret itself is never stored.
    digest                  TEXT NOT NULL UNIQUE,
    team                    TEXT NOT NULL,
    owner                   TEXT,
    labels                  TEXT NOT NULL DEFAULT '{}',
    admin                   BIGINT NOT NULL DEFAULT 0,
    clearance               TEXT NOT NULL DEFAULT 'restricted',
    default_classification  TEXT NOT NULL DEFAULT 'internal',
    opt_ins                 TEXT NOT NULL DEFAULT '[]',
    created_ms              BIGINT NOT NULL,
    updated_ms              BIGINT NOT NULL,
    expires_ms              BIGINT,
    revoked_ms              BIGINT,
    -- After a rotation: the old secret's digest and when it stops working.
    previous_digest         TEXT,
    previous_until_ms       BIGINT
);
CREATE INDEX keys_team ON keys (team);

CREATE TABLE budgets (
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL,
    period      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, name, period)
);

CREATE TABLE limits (
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- The `[[limits]]` entry's fields other than scope and name, as JSON.
    rule        TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, name)
);

-- One row per provider call that may be billed: every finished request, and each timed-out
-- call (`unanswered`). `uid` makes a retried batch write each row once.
CREATE TABLE ledger (
    uid             TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    ts_ms           BIGINT NOT NULL,
    day             TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    team            TEXT NOT NULL,
    model           TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    provider        TEXT NOT NULL,
    cache_hit       BIGINT NOT NULL,
    cache_miss      BIGINT NOT NULL,
    output          BIGINT NOT NULL,
    reasoning       BIGINT NOT NULL,
    cost_cache_hit  BIGINT NOT NULL,
    cost_cache_miss BIGINT NOT NULL,
    cost_output     BIGINT NOT NULL,
    cost            BIGINT NOT NULL,
    computed_cost   BIGINT,
    currency        TEXT NOT NULL,
    estimated       BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    price           TEXT NOT NULL,
    era             TEXT,
    tier            TEXT NOT NULL,
    unanswered      TEXT,
    attempt         BIGINT
);
CREATE INDEX ledger_ts ON ledger (ts_ms);
CREATE INDEX ledger_team_day ON ledger (team, day);

-- What budgets read: picodollars per key or team and period (a day, a month, `total`), kept
-- in the same transaction as the rows they sum, and outliving the rows' retention.
CREATE TABLE spend_counters (
    scope   TEXT NOT NULL,
    name    TEXT NOT NULL,
    team    TEXT NOT NULL,
    period  TEXT NOT NULL,
    pico    BIGINT NOT NULL,
    PRIMARY KEY (scope, name, period)
);

-- Every change made through the admin API: who, what, when; never a secret.
CREATE TABLE admin_audit (
    id      TEXT PRIMARY KEY,
    ts_ms   BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX admin_audit_ts ON admin_audit (ts_ms);

-- Bumped by every change to keys, teams, budgets or limits: replicas compare it with the one
-- their view was read at.
CREATE TABLE revision (
    id  BIGINT PRIMARY KEY,
    n   BIGINT NOT NULL
);
INSERT INTO revision (id, n) VALUES (1, 0);

-- For BI tools: one row per billed call, in dollars (exact NUMERIC in PostgreSQL, REAL in
-- SQLite; `cost` itself is exact picodollars in both).
CREATE VIEW dsgw_spend AS
SELECT
    request_id, ts_ms, day, key_id, team, model, deployment, provider,
    cache_hit AS cache_hit_tokens, cache_miss AS cache_miss_tokens,
    output AS output_tokens, reasoning AS reasoning_tokens,
    CAST(cost AS USD_DECIMAL) / 1000000000000 AS cost_usd,
    CAST(cost_cache_hit AS USD_DECIMAL) / 1000000000000 AS cost_cache_hit_usd,
    CAST(cost_cache_miss AS USD_DECIMAL) / 1000000000000 AS cost_cache_miss_usd,
    CAST(cost_output AS USD_DECIMAL) / 1000000000000 AS cost_output_usd,
    estimated, outcome, price, tier, unanswered
FROM ledger;
