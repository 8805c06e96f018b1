# syntax=docker/dockerfile:1
# The operator image: the same `ratline` package, started as the kopf operator
# (`python -m ratline.controller`). The Helm chart runs it as uid 65532 with a
# read-only root filesystem; the metrics/health port is 8080.
#
# Build from the repository root:
#   docker build -f worker-image/operator.Dockerfile -t ghcr.io/ratline/operator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ratline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/ratline/bin/pip install . \
 && /opt/ratline/bin/python -m compileall -q /opt/ratline/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ratline-operator" \
      org.opencontainers.image.description="Ratline Kubernetes operator" \
      org.opencontainers.image.source="https://github.com/ratline/ratline" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
RUN groupadd --system --gid 65532 ratline \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin ratline
COPY --from=build /opt/ratline /opt/ratline
ENV PATH=/opt/ratline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "ratline.controller"]
