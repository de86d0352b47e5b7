-- Content cards of each tenant. A card's current state lives in `cards.cards`; every version it
-- ever had, the current one included, in `cards.card_versions`. Every query filters by tenant:
-- a card of another tenant is indistinguishable from a missing one.
CREATE TABLE cards.cards (
    -- uuid v7: ordered by creation time, so listing newest first is an index scan on the id.
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    type        text NOT NULL,
    title       text NOT NULL,
    content     jsonb NOT NULL CHECK (jsonb_typeof(content) = 'object'),
    version     integer NOT NULL CHECK (version >= 1),
    created_by  text NOT NULL DEFAULT '',
    updated_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: a deleted card is gone from every read, but its versions are kept.
    deleted_at  timestamptz
);

CREATE INDEX cards_by_tenant ON cards.cards (tenant, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX cards_by_tenant_type ON cards.cards (tenant, type, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE cards.card_versions (
    card_id     uuid NOT NULL REFERENCES cards.cards (id),
    version     integer NOT NULL,
    tenant      text NOT NULL,
    type        text NOT NULL,
    title       text NOT NULL,
    content     jsonb NOT NULL,
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (card_id, version)
);

-- JSON schemas of each tenant's own card types; the built-in types (company, audience, voice,
-- insight) have theirs in the worker and cannot be registered here.
CREATE TABLE cards.card_types (
    tenant      text NOT NULL,
    type        text NOT NULL,
    schema      jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, type)
);

-- What each write job returned, written in the same transaction as the write: a redelivered job
-- (or a retried request with the same Idempotency-Key) gets the recorded answer instead of a
-- second card or version.
CREATE TABLE cards.job_results (
    tenant      text NOT NULL,
    job_id      text NOT NULL,
    operation   text NOT NULL,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, job_id)
);
