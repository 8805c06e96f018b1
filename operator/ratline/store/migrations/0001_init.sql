-- Ratline event store, version 1: runs, their append-only history and their inbox.
-- Applied by ratline.store.migrate in one transaction, under an advisory lock.

CREATE TABLE runs (
    id                text PRIMARY KEY,          -- the WorkflowRun's uid
    namespace         text NOT NULL,
    name              text NOT NULL,
    workflow          text NOT NULL,
    entrypoint        text NOT NULL DEFAULT '',
    image             text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN (
                          'pending', 'running', 'suspended', 'succeeded', 'failed',
                          'cancelled', 'timed_out', 'blocked')),
    input             jsonb,
    result            jsonb,
    error             jsonb,
    wake_at           timestamptz,
    waiting_for       text[] NOT NULL DEFAULT '{}',
    lease_owner       text,
    lease_epoch       bigint NOT NULL DEFAULT 0,
    lease_expires_at  timestamptz,
    history_length    integer NOT NULL DEFAULT 0,
    max_duration_s    double precision,
    parent_id         text,
    last_append       text,                      -- token of the last append (safe retries)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);

-- due_runs(): the operator's timer scan touches only suspended runs.
CREATE INDEX runs_due_idx ON runs (wake_at) WHERE status = 'suspended';
-- list_runs(statuses=...): newest first within a status.
CREATE INDEX runs_status_idx ON runs (status, created_at);
CREATE INDEX runs_parent_idx ON runs (parent_id) WHERE parent_id IS NOT NULL;

-- No foreign key on run_id: only ratline_append writes events, right after locking
-- the run's row, and skipping the per-row RI check keeps appends fast. Deleting a
-- run deletes its events through the trigger below.
CREATE TABLE events (
    run_id      text NOT NULL,
    seq         integer NOT NULL CHECK (seq > 0),
    type        text NOT NULL,
    command_id  integer,
    name        text,
    payload     jsonb NOT NULL DEFAULT '{}',
    time        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

CREATE FUNCTION ratline_delete_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events WHERE run_id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER runs_delete_events AFTER DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION ratline_delete_events();

CREATE TABLE inbox (
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('signal', 'reject', 'cancel', 'timeout')),
    payload     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    consumed    boolean NOT NULL DEFAULT false,
    delivery    bigint GENERATED ALWAYS AS IDENTITY,  -- delivery order
    PRIMARY KEY (run_id, name)
);

CREATE INDEX inbox_pending_idx ON inbox (run_id, delivery) WHERE NOT consumed;

-- One append = one round trip: fence on the epoch, write the events, apply the run
-- update, consume inbox items and NOTIFY, all in the caller's single statement.
-- Returns outcome 'ok', 'duplicate' (this token already committed: a retry after a
-- lost reply), 'fenced' or 'not_found'; base_seq is the length before the append.
CREATE FUNCTION ratline_append(
    p_run_id        text,
    p_epoch         bigint,
    p_token         text,
    p_events        jsonb,      -- [{type, command_id, name, payload}, ...]
    p_status        text,       -- NULL: unchanged
    p_set_result    boolean,
    p_result        jsonb,
    p_set_error     boolean,
    p_error         jsonb,
    p_wake_at       timestamptz,
    p_clear_wake_at boolean,
    p_waiting_for   text[],     -- NULL: unchanged
    p_consumed      text[],
    OUT outcome     text,
    OUT base_seq    integer,
    OUT at          timestamptz,
    OUT cur_epoch   bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := jsonb_array_length(p_events);
    cur_token text;
BEGIN
    at := now();
    UPDATE runs SET
        history_length   = history_length + n,
        status           = COALESCE(p_status, status),
        started_at       = CASE WHEN p_status = 'running' THEN COALESCE(started_at, at)
                                ELSE started_at END,
        finished_at      = CASE WHEN p_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                                THEN COALESCE(finished_at, at) ELSE finished_at END,
        result           = CASE WHEN p_set_result THEN p_result ELSE result END,
        error            = CASE WHEN p_set_error THEN p_error ELSE error END,
        wake_at          = CASE WHEN p_wake_at IS NOT NULL THEN p_wake_at
                                WHEN p_clear_wake_at THEN NULL ELSE wake_at END,
        waiting_for      = COALESCE(p_waiting_for, waiting_for),
        last_append      = p_token,
        updated_at       = at
    WHERE id = p_run_id AND lease_epoch = p_epoch AND last_append IS DISTINCT FROM p_token
    RETURNING history_length - n INTO base_seq;

    IF NOT FOUND THEN
        SELECT lease_epoch, last_append, history_length - n
          INTO cur_epoch, cur_token, base_seq FROM runs WHERE id = p_run_id;
        IF NOT FOUND THEN
            outcome := 'not_found';
        ELSIF cur_epoch = p_epoch AND cur_token = p_token THEN
            outcome := 'duplicate';
        ELSE
            outcome := 'fenced';
        END IF;
        RETURN;
    END IF;
    cur_epoch := p_epoch;

    IF n > 0 THEN
        INSERT INTO events (run_id, seq, type, command_id, name, payload, time)
        SELECT p_run_id, base_seq + e.ord::integer, e.item->>'type',
               (e.item->>'command_id')::integer, e.item->>'name',
               COALESCE(e.item->'payload', '{}'::jsonb), at
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS e(item, ord);
    END IF;

    IF cardinality(p_consumed) > 0 THEN
        UPDATE inbox SET consumed = true
         WHERE run_id = p_run_id AND name = ANY (p_consumed) AND NOT consumed;
    END IF;

    -- A delivery that committed after the worker read its inbox must still wake
    -- the run it is suspending (this statement sees it: it runs after the row lock).
    IF p_status = 'suspended' AND EXISTS (
        SELECT 1 FROM inbox WHERE run_id = p_run_id AND NOT consumed
    ) THEN
        UPDATE runs SET wake_at = at WHERE id = p_run_id;
    END IF;

    PERFORM pg_notify('ratline_events', p_run_id);
    outcome := 'ok';
END;
$$;
