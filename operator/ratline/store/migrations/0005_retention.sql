-- Ratline event store, version 5: retention of finished histories (issue #12).
-- ratline.store.retention deletes finished runs older than the operator's retention,
-- oldest first and a bounded batch at a time; this partial index serves exactly that
-- scan and holds only finished runs, so live runs never enter it.
-- (Numbered 5 to leave 3 and 4 to concurrent changes; the migrator applies any
-- missing version, so a gap is harmless.)

CREATE INDEX runs_finished_idx ON runs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled', 'timed_out');
