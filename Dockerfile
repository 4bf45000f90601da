# One image for every gateway component; choose it by command:
#   docker run IMAGE authz --config /etc/gateway/gateway.yaml
#   docker run IMAGE login --config /etc/gateway/gateway.yaml
#   docker run IMAGE render-envoy --config /etc/gateway/gateway.yaml
# Envoy itself runs from the official Envoy image next to it (see README).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY ext_authz ./ext_authz
COPY login_app ./login_app
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/gateway/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /opt/gateway /opt/gateway
ENV PATH=/opt/gateway/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50051 5000
ENTRYPOINT ["gateway"]
CMD ["--help"]
