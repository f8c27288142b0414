# syntax=docker/dockerfile:1
# posthog-incident-receiver: an Alertmanager webhook receiver that runs the PostHog runbook.
#
# Two stages: the builder installs the locked dependencies (requirements.lock) and the
# package's wheel into a virtualenv; the final image gets only that virtualenv, no compilers,
# no pip caches, no sources. Both stages use the same base image so the virtualenv's paths
# stay valid.
#
# No HEALTHCHECK: Kubernetes ignores it and runs the chart's probes on /healthz and /readyz
# instead; `docker run` users can curl those paths.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# pip compiles the bytecode at install time, so the read-only image never needs to write it.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The runtime dependencies come from the lock, each version pinned and its hash checked, so
# two builds of one commit ship the same packages; `pip check` fails the build if the lock
# misses one. This layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY config ./config
COPY receiver ./receiver
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/posthog_incident_receiver-*.whl \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="posthog-incident-receiver" \
      org.opencontainers.image.description="Alertmanager webhook receiver that runs the PostHog incident runbook" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 receiver \
    && useradd --system --uid 10001 --gid receiver --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin receiver \
    && mkdir -p /etc/posthog-receiver /var/lib/posthog-receiver \
    && chown receiver:receiver /var/lib/posthog-receiver
COPY --from=builder /opt/venv /opt/venv
# The root filesystem is read-only in the pod: nothing may try to write bytecode.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/posthog-receiver
EXPOSE 9095
ENTRYPOINT ["posthog-receiver"]
CMD ["serve", "--config", "/etc/posthog-receiver/config.yaml"]
