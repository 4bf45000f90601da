# syntax=docker/dockerfile:1
#
# One image for every gateway component; the command chooses which:
#   docker run IMAGE authz --config /etc/gateway/gateway.yaml          # ext_authz
#   docker run IMAGE login --config /etc/gateway/gateway.yaml          # login app
#   docker run IMAGE render-envoy --config /etc/gateway/gateway.yaml   # Envoy bootstrap
#   docker run IMAGE check-config --config /etc/gateway/gateway.yaml
#   docker run IMAGE sessions list --config /etc/gateway/gateway.yaml
# Envoy itself runs from the official envoyproxy/envoy image beside it (deploy/kubernetes).
#
# No HEALTHCHECK, on purpose: each command has its own notion of healthy (a gRPC health
# service, an HTTP endpoint, or none for one-shot commands), and Kubernetes ignores HEALTHCHECK
# anyway. Probes live with the manifests (deploy/); /opt/gateway/probe.py is the exec probe
# for servers kubelet cannot reach (a unix socket, loopback).
#
# Runs as uid/gid 10001 with nothing to write: fine under readOnlyRootFilesystem (bytecode is
# compiled at install time; give /tmp an emptyDir).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the project and its dependencies ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY ext_authz ./ext_authz
COPY login_app ./login_app
# Every dependency ships wheels, so no compiler is needed even here. The project is installed
# as a wheel (not editable): its package data, the login app's templates, comes along.
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --upgrade pip \
    && /opt/gateway/bin/pip install . \
    && /opt/gateway/bin/gateway --help > /dev/null

# ---- final: the virtualenv on a clean base, no sources, no build tools -------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Authentication gateway: ext_authz gRPC server and login app behind Envoy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/gateway /opt/gateway
COPY deploy/probe.py /opt/gateway/probe.py
ENV PATH=/opt/gateway/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# ext_authz on TCP (mesh mode) and the login app; in the Envoy pod ext_authz uses a socket.
EXPOSE 50051 5000
ENTRYPOINT ["gateway"]
CMD ["--help"]
