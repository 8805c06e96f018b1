"""Workflows the real-node tests run inside containers (the `ratline-e2e:local` image).

A container cannot append to a file on the test's host, so these record what really
ran in the run's own Postgres database (table `node_effects`, reached through the
worker's `RATLINE_DSN`): a test counts rows to prove a completed step never repeats.
"""
