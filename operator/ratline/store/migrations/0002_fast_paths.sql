-- Ratline event store, version 2: the fast paths of issue #3.
--   ratline_begin        lease + run + history + inbox in one call (one round trip)
--   ratline_commit       ratline_append that can also release the lease and NOTIFYs
--                        only when it matters (status change, release, or at most
--                        every 250 ms per run while steps go on)
--   ratline_commit_many  the appends of many runs in one statement = one commit
-- Version 1's functions stay as they were: workers of the previous release keep working.

ALTER TABLE runs ADD COLUMN notified_at timestamptz;  -- when an append last NOTIFYd

-- Take the lease (as acquire_lease does) and return, as one json text,
-- {"run": <runs row>, "leased": true, "history": [[seq, type, command_id, name,
-- payload, time], ...], "inbox": [[name, kind, payload, created_at], ...]};
-- {"run": ..., "leased": false} when the run is finished, blocked or leased by a
-- live owner; NULL when there is no such run. One json value is decoded far faster
-- by the client than thousands of rows with per-column codecs.
CREATE FUNCTION ratline_begin(p_run_id text, p_owner text, p_ttl_s double precision)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r runs;
BEGIN
    FOR attempt IN 1..3 LOOP
        UPDATE runs SET lease_owner = p_owner, lease_epoch = lease_epoch + 1,
               lease_expires_at = now() + make_interval(secs => p_ttl_s), updated_at = now()
         WHERE id = p_run_id
           AND status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'blocked')
           AND (lease_owner IS NULL OR lease_owner = p_owner
                OR lease_expires_at IS NULL OR lease_expires_at <= now())
        RETURNING * INTO r;
        IF FOUND THEN
            RETURN json_build_object(
                'run', row_to_json(r),
                'leased', true,
                'history', (SELECT coalesce(json_agg(json_build_array(
                                       seq, type, command_id, name, payload, time)
                                       ORDER BY seq), '[]')
                              FROM events WHERE run_id = p_run_id),
                'inbox', (SELECT coalesce(json_agg(json_build_array(
                                     name, kind, payload, created_at)
                                     ORDER BY delivery), '[]')
                            FROM inbox WHERE run_id = p_run_id AND NOT consumed)
            )::text;
        END IF;
        SELECT * INTO r FROM runs WHERE id = p_run_id;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- Finished, blocked or held by a live owner: say so. Otherwise the holder let
        -- go between our two statements (each sees a fresh snapshot): try again.
        EXIT WHEN r.status IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'blocked')
               OR (r.lease_owner IS NOT NULL AND r.lease_expires_at IS NOT NULL);
    END LOOP;
    RETURN json_build_object('run', row_to_json(r), 'leased', false)::text;
END;
$$;

-- ratline_append (0001) plus p_release (clear the lease owner in the same commit) and
-- a throttled NOTIFY: the operator projects status from notifications, so a status
-- change or a release always notifies; plain step appends notify when the run's last
-- notification is older than 250 ms (its projector also refreshes every few seconds).
CREATE FUNCTION ratline_commit(
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
    p_release       boolean,
    OUT outcome     text,
    OUT base_seq    integer,
    OUT at          timestamptz,
    OUT cur_epoch   bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := jsonb_array_length(p_events);
    cur_token text;
    do_notify boolean;
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
        lease_owner      = CASE WHEN p_release THEN NULL ELSE lease_owner END,
        lease_expires_at = CASE WHEN p_release THEN NULL ELSE lease_expires_at END,
        notified_at      = CASE WHEN p_status IS NOT NULL OR p_release OR notified_at IS NULL
                                     OR notified_at <= at - interval '250 milliseconds'
                                THEN at ELSE notified_at END,
        last_append      = p_token,
        updated_at       = at
    WHERE id = p_run_id AND lease_epoch = p_epoch AND last_append IS DISTINCT FROM p_token
    RETURNING history_length - n, notified_at = at INTO base_seq, do_notify;

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

    IF do_notify THEN
        PERFORM pg_notify('ratline_events', p_run_id);
    END IF;
    outcome := 'ok';
END;
$$;

-- Group commit: the appends of many runs (each fenced on its own epoch, each with its
-- own outcome) in one statement and one commit. p_items is a json array of objects
-- named like ratline_commit's parameters without the p_; the client sorts them by
-- run id so concurrent batches lock rows in the same order. idx is 1-based.
CREATE FUNCTION ratline_commit_many(p_items jsonb)
RETURNS TABLE (idx integer, outcome text, base_seq integer, at timestamptz, cur_epoch bigint)
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    ord bigint;
BEGIN
    FOR item, ord IN
        SELECT e.value, e.ordinality FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e
    LOOP
        idx := ord;
        SELECT c.outcome, c.base_seq, c.at, c.cur_epoch
          INTO outcome, base_seq, at, cur_epoch
          FROM ratline_commit(
              item->>'run_id',
              (item->>'epoch')::bigint,
              item->>'token',
              item->'events',
              item->>'status',
              (item->>'set_result')::boolean,
              nullif(item->'result', 'null'::jsonb),
              (item->>'set_error')::boolean,
              nullif(item->'error', 'null'::jsonb),
              (item->>'wake_at')::timestamptz,
              (item->>'clear_wake_at')::boolean,
              CASE WHEN jsonb_typeof(item->'waiting_for') = 'array'
                   THEN ARRAY(SELECT jsonb_array_elements_text(item->'waiting_for')) END,
              ARRAY(SELECT jsonb_array_elements_text(item->'consumed')),
              (item->>'release')::boolean
          ) AS c;
        RETURN NEXT;
    END LOOP;
END;
$$;
