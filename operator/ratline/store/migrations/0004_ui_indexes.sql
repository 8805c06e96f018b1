-- Ratline event store, version 4: indexes for the web UI's runs list (issue #13).
-- The list is per namespace, newest first, paginated by keyset on (created_at, id);
-- the optional filters are a status set and a workflow name. Each index serves one
-- of those shapes so a page costs O(page size), not O(runs in the namespace).
-- (Numbered 4 to leave 3 to a concurrent change; the migrator applies any missing
-- version, so a gap is harmless.)

CREATE INDEX runs_ui_ns_idx ON runs (namespace, created_at DESC, id DESC);
CREATE INDEX runs_ui_ns_status_idx ON runs (namespace, status, created_at DESC, id DESC);
CREATE INDEX runs_ui_ns_workflow_idx ON runs (namespace, workflow, created_at DESC, id DESC);
