# The gateway image: one image for every process (gateway serve | worker | beat | migrate | check).
#   docker build -t inference-gateway .
# BASE must provide python3 (3.11) with venv; the default is the official slim image.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# pip trusts the system CAs of the base; behind a TLS-intercepting proxy, mount its bundle over this
# file for the build (`--volume`), or point PIP_CERT elsewhere with --build-arg.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The runtime lock first: its layer is reused until requirements.txt changes.
COPY requirements.txt ./
RUN python3 -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml README.md ./
COPY gateway_project ./gateway_project
COPY groups ./groups
COPY keys ./keys
COPY routing ./routing
COPY billing ./billing
COPY templates ./templates
RUN /opt/gateway/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/gateway/bin/pip install --no-deps /wheels/*.whl
# Static files are collected at build time and served by the gateway itself. The key below only
# lets settings load for this one command; it is not kept in the image.
RUN GATEWAY_VAR_DIR=/var/lib/gateway SECRET_KEY=collectstatic-only-not-a-secret \
    /opt/gateway/bin/gateway manage collectstatic --no-input -v 0 \
    && rm -f /var/lib/gateway/secret_key

FROM ${BASE}
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_VAR_DIR=/var/lib/gateway \
    GATEWAY_PRODUCTION=1 \
    GATEWAY_BIND=0.0.0.0:8000
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --no-create-home gateway
COPY --from=build /opt/gateway /opt/gateway
COPY --from=build --chown=10001:10001 /var/lib/gateway /var/lib/gateway
USER 10001:10001
WORKDIR /var/lib/gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["gateway", "probe", "/healthz"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
