# syntax=docker/dockerfile:1
# The real-node e2e tests' image: the examples image plus the test workflows
# (tests/e2e/workflows, tests/e2e/node_flows). Built by worker-image/build.sh.
ARG EXAMPLES_IMAGE=ghcr.io/ratline/examples:0.1.0
FROM ${EXAMPLES_IMAGE}
COPY tests/__init__.py /app/tests/__init__.py
COPY tests/e2e/__init__.py /app/tests/e2e/__init__.py
COPY tests/e2e/workflows/ /app/tests/e2e/workflows/
COPY tests/e2e/node_flows/ /app/tests/e2e/node_flows/
