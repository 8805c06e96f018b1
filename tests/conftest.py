"""Shared pytest wiring: the Postgres and Kubernetes fixtures live in their
own plugin modules under tests/cluster so each harness stays one job."""

pytest_plugins = ["tests.cluster.pg_fixtures", "tests.cluster.kube_fixtures"]
