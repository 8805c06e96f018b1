# syntax=docker/dockerfile:1
# The examples image: the worker image plus examples/ under /app, so the
# Workflows in examples/*/workflow.yaml (entrypoint `examples.<name>.workflow:...`)
# run as they are. Build from the repository root after the worker image:
#   docker build -f worker-image/examples.Dockerfile -t ghcr.io/ratline/examples:0.1.0 .
ARG WORKER_IMAGE=ghcr.io/ratline/worker:0.1.0
FROM ${WORKER_IMAGE}
LABEL org.opencontainers.image.title="ratline-examples" \
      org.opencontainers.image.description="Ratline example workflows" \
      org.opencontainers.image.version="0.1.0"
COPY examples/ /app/examples/
