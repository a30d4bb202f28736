-- ops-agent governance on PostgreSQL (directly, or the Postgres behind Supabase): agents, their
-- reputation events, and the one function that changes a score.
--
-- Applied by ops_agent.governance.postgres_reputation.apply_migrations, which records each file in
-- ops_agent_schema_migrations. On Supabase, apply it the same way over the project's direct connection
-- string, or paste it into the SQL editor; PostgREST serves the tables and the function once its schema
-- cache reloads (the NOTIFY at the end).
--
-- `agents` and `reputation_events` keep the seed's governance framework names, unprefixed, because other
-- agents of that framework (mcp_client, peer_agent) share them. CREATE TABLE is deliberately not
-- IF NOT EXISTS: a foreign `agents` table of another shape must stop the migration, not be written into.

CREATE TABLE agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    agent_type text NOT NULL,
    reputation_score integer NOT NULL DEFAULT 100,
    successes integer NOT NULL DEFAULT 0,
    -- The seed's score table (policy.yaml `levels`): 0-89, 90-129, 130-159, 160+. This is the level the
    -- score alone earns; the gate additionally keeps an agent at sandbox_only while on probation.
    permission_level text NOT NULL GENERATED ALWAYS AS (
        CASE
            WHEN reputation_score >= 160 THEN 'prod_full_access'
            WHEN reputation_score >= 130 THEN 'prod_low_risk'
            WHEN reputation_score >= 90 THEN 'staging_access'
            ELSE 'sandbox_only'
        END
    ) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_name_key UNIQUE (name),
    CONSTRAINT agents_agent_type_check CHECK (agent_type IN ('ops_agent', 'mcp_client', 'peer_agent')),
    CONSTRAINT agents_reputation_score_check CHECK (reputation_score >= 0),
    CONSTRAINT agents_successes_check CHECK (successes >= 0)
);

CREATE TABLE reputation_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    delta integer NOT NULL,
    score_after integer NOT NULL,
    reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reputation_events_event_type_check
        CHECK (event_type IN ('task_success', 'task_failure', 'budget_exceeded', 'permission_denied'))
);

CREATE INDEX reputation_events_agent_id_idx ON reputation_events (agent_id, id DESC);

-- Only the service role (and the owner) may read or write these through PostgREST: with RLS on and no
-- policy, the anon and authenticated roles see no rows. The owner and the service role bypass RLS.
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE reputation_events ENABLE ROW LEVEL SECURITY;

-- The atomic score change: one UPDATE ... RETURNING (its row lock orders concurrent events, so none is
-- lost) and the event row, in the caller's transaction. The score never goes below 0.
-- Parameters are named for PostgREST (POST /rest/v1/rpc/record_reputation_event with a JSON object of
-- them); a missing agent raises PT404, which PostgREST answers with HTTP 404.
CREATE FUNCTION record_reputation_event(agent_id uuid, event_type text, delta integer, reason text)
RETURNS agents
LANGUAGE plpgsql
VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    updated agents;
BEGIN
    UPDATE agents AS a
       SET reputation_score = greatest(0, a.reputation_score + record_reputation_event.delta),
           successes = a.successes + (record_reputation_event.event_type = 'task_success')::integer,
           updated_at = now()
     WHERE a.id = record_reputation_event.agent_id
    RETURNING a.* INTO updated;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no agent %', record_reputation_event.agent_id USING ERRCODE = 'PT404';
    END IF;
    INSERT INTO reputation_events (agent_id, event_type, delta, score_after, reason)
    VALUES (updated.id, record_reputation_event.event_type, record_reputation_event.delta,
            updated.reputation_score, record_reputation_event.reason);
    RETURN updated;
END
$$;

REVOKE EXECUTE ON FUNCTION record_reputation_event(uuid, text, integer, text) FROM PUBLIC;
DO $$
DECLARE
    role_name text;
BEGIN
    -- Supabase's roles, when they exist: the API roles may not call it, the service role may.
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION record_reputation_event(uuid, text, integer, text) FROM %I',
                           role_name);
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION record_reputation_event(uuid, text, integer, text) TO service_role;
        GRANT SELECT, INSERT, UPDATE ON agents TO service_role;
        GRANT SELECT, INSERT ON reputation_events TO service_role;
    END IF;
END
$$;

NOTIFY pgrst, 'reload schema';
