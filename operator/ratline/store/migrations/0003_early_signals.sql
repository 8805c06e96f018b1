-- Ratline event store, version 3: only inbox items a run waits for make it due.
--   runs.early_signals  signals/rejections of a suspended run for promises it does not
--                       wait for (not created or not awaited yet): they stay in the
--                       inbox, are listed here and resolve their promise once it exists
--   ratline_wakes       the rule: a cancel or a timeout, or a promise in waiting_for
--                       (an item `name#tag` is for promise `name`: a resend's name)
--   ratline_commit      as in 0002, but a suspension is made due only by such items
--                       (0002 woke it for any unconsumed item: an early signal kept a
--                       run waking up for ever). ratline_commit_many calls it, so batched
--                       appends follow the same rule. ratline_append (0001) is unchanged.
-- The deliver statement (store/postgres.py) applies ratline_wakes too.

ALTER TABLE runs ADD COLUMN early_signals text[] NOT NULL DEFAULT '{}';

CREATE FUNCTION ratline_wakes(p_kind text, p_name text, p_waiting_for text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_kind IN ('cancel', 'timeout') OR split_part(p_name, '#', 1) = ANY (p_waiting_for)
$$;

-- ratline_commit of 0002 with the rule above; same parameters and outputs.
CREATE OR REPLACE FUNCTION ratline_commit(
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
        early_signals    = CASE WHEN p_status IS NOT NULL THEN '{}' ELSE early_signals END,
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

    -- Suspending with items still in the inbox: one that ratline_wakes (delivered
    -- after the worker last read its inbox) makes the run due now; the others are
    -- early signals and only get listed. This statement sees every delivery that
    -- committed before it, and a later one waits for our row lock and then sees
    -- the suspended row (the deliver statement applies the same rule).
    IF p_status = 'suspended' AND EXISTS (
        SELECT 1 FROM inbox WHERE run_id = p_run_id AND NOT consumed
    ) THEN
        UPDATE runs SET
            wake_at = CASE WHEN EXISTS (
                          SELECT 1 FROM inbox i
                           WHERE i.run_id = p_run_id AND NOT i.consumed
                             AND ratline_wakes(i.kind, i.name, runs.waiting_for))
                      THEN at ELSE wake_at END,
            early_signals = ARRAY(
                SELECT i.name FROM inbox i
                 WHERE i.run_id = p_run_id AND NOT i.consumed
                   AND NOT ratline_wakes(i.kind, i.name, runs.waiting_for)
                 ORDER BY i.delivery)
         WHERE id = p_run_id;
    END IF;

    IF do_notify THEN
        PERFORM pg_notify('ratline_events', p_run_id);
    END IF;
    outcome := 'ok';
END;
$$;
