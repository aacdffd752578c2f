-- Core schema of the deal service, trimmed from the original data model to what the deal
-- flows use (see shared/docs/ORIGINAL_SYSTEM.md section 1). gen_random_uuid() is built in
-- from Postgres 13, so no extension is needed.

CREATE TABLE profiles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    first_name  text CHECK (first_name IS NULL OR length(first_name) > 0),
    last_name   text CHECK (last_name IS NULL OR length(last_name) > 0),
    email       text NOT NULL UNIQUE,
    stage       text DEFAULT 'Sales Rep',
    avatar_url  text,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deal_stages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL UNIQUE,
    description         text,
    color               text NOT NULL,
    order_position      integer NOT NULL,
    default_probability integer NOT NULL CHECK (default_probability BETWEEN 0 AND 100),
    is_final            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE companies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    domain      text UNIQUE,
    industry    text,
    size        text CHECK (size IN ('startup', 'small', 'medium', 'large', 'enterprise')),
    website     text,
    owner_id    uuid NOT NULL REFERENCES profiles (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_companies_owner_id ON companies (owner_id);

CREATE TABLE contacts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL UNIQUE,
    first_name  text,
    last_name   text,
    full_name   text GENERATED ALWAYS AS (
                    nullif(trim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')), '')
                ) STORED,
    title       text,
    phone       text,
    is_primary  boolean NOT NULL DEFAULT false,
    company_id  uuid REFERENCES companies (id) ON DELETE SET NULL,
    owner_id    uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_contacts_company_id ON contacts (company_id);
CREATE INDEX idx_contacts_owner_id ON contacts (owner_id);

CREATE TABLE deals (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL,
    company             text NOT NULL,
    contact_name        text,
    contact_email       text,
    contact_phone       text,
    value               numeric(12, 2) NOT NULL DEFAULT 0,
    description         text,
    stage_id            uuid NOT NULL REFERENCES deal_stages (id),
    owner_id            uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    expected_close_date date,
    probability         integer CHECK (probability IS NULL OR probability BETWEEN 0 AND 100),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'won', 'lost')),
    one_off_revenue     numeric(12, 2) NOT NULL DEFAULT 0,
    monthly_mrr         numeric(12, 2) NOT NULL DEFAULT 0,
    annual_value        numeric(12, 2),
    company_id          uuid REFERENCES companies (id) ON DELETE SET NULL,
    primary_contact_id  uuid REFERENCES contacts (id) ON DELETE SET NULL,
    -- Set by the optimized create path so a retried or fallback insert lands exactly once.
    idempotency_key     text UNIQUE,
    -- Bumped by every update: lets the service refuse lost updates.
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    stage_changed_at    timestamptz NOT NULL DEFAULT now()
);
-- The indexes a deal list needs: per owner, per status, per stage, newest first, and the
-- (created_at, id) keyset used by the optimized profile's pagination.
CREATE INDEX idx_deals_owner_status ON deals (owner_id, status, stage_id);
CREATE INDEX idx_deals_stage_id ON deals (stage_id);
CREATE INDEX idx_deals_status ON deals (status);
CREATE INDEX idx_deals_created_at ON deals (created_at DESC, id DESC);
CREATE INDEX idx_deals_owner_created_at ON deals (owner_id, created_at DESC, id DESC);
CREATE INDEX idx_deals_company_id ON deals (company_id);
CREATE INDEX idx_deals_primary_contact_id ON deals (primary_contact_id);

-- The original's revenue model: value = one-off + 3 months of MRR, annual = one-off + 12 MRR.
-- Any value a client sends is replaced, as the original trigger did.
CREATE FUNCTION update_deal_revenue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.value := coalesce(NEW.one_off_revenue, 0) + 3 * coalesce(NEW.monthly_mrr, 0);
    NEW.annual_value := coalesce(NEW.one_off_revenue, 0) + 12 * coalesce(NEW.monthly_mrr, 0);
    RETURN NEW;
END;
$$;
CREATE TRIGGER update_deal_revenue_trigger
    BEFORE INSERT OR UPDATE ON deals
    FOR EACH ROW EXECUTE FUNCTION update_deal_revenue();

CREATE TABLE activities (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    type        text NOT NULL CHECK (type IN ('sale', 'outbound', 'meeting', 'proposal')),
    status      text NOT NULL DEFAULT 'completed'
                CHECK (status IN ('pending', 'completed', 'cancelled', 'no_show')),
    priority    text NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high')),
    client_name text NOT NULL,
    sales_rep   text NOT NULL,
    details     text,
    amount      numeric(12, 2),
    date        timestamptz NOT NULL DEFAULT now(),
    deal_id     uuid REFERENCES deals (id) ON DELETE SET NULL,
    company_id  uuid REFERENCES companies (id) ON DELETE SET NULL,
    contact_id  uuid REFERENCES contacts (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_activities_user_id ON activities (user_id);
CREATE INDEX idx_activities_deal_id ON activities (deal_id);
CREATE INDEX idx_activities_date ON activities (date);

CREATE TABLE deal_stage_history (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    deal_id          uuid NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    stage_id         uuid NOT NULL REFERENCES deal_stages (id),
    user_id          uuid REFERENCES profiles (id) ON DELETE SET NULL,
    entered_at       timestamptz NOT NULL DEFAULT now(),
    exited_at        timestamptz,
    duration_seconds integer
);
CREATE INDEX idx_deal_stage_history_deal_id ON deal_stage_history (deal_id, entered_at);

-- Bearer sessions: only a SHA-256 hash of the token is stored, never the token itself.
CREATE TABLE sessions (
    token_hash  text PRIMARY KEY CHECK (length(token_hash) = 64),
    user_id     uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX idx_sessions_user_id ON sessions (user_id);
