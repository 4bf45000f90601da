"""Liveness and readiness probe for servers that kubelet cannot reach by itself.

In the gateway pod, ext_authz listens on a unix socket and the login app on 127.0.0.1: neither
is on the pod IP, which is where kubelet's ``grpc``/``httpGet`` probes connect. Kubernetes runs
this inside the container instead (an ``exec`` probe)::

    python /opt/gateway/probe.py grpc unix:/var/run/gateway/ext_authz.sock
    python /opt/gateway/probe.py http http://127.0.0.1:5000/auth/health

Exit status 0 means healthy, 1 unhealthy; the reason goes to stderr, which kubelet records in
the pod's events. The Dockerfile copies this file into the image; it imports nothing from the
project so that it keeps working whatever the packages' layout.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

HEALTHY, UNHEALTHY = 0, 1


def check_grpc(target: str, service: str, timeout: float) -> str | None:
    """None when the gRPC health service reports SERVING, else why not."""
    import grpc  # here, not at the top: the http check must not pay for loading gRPC
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{target}: {exc.code().name} {exc.details() or ''}".rstrip()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{target}: {status}"
    return None


def check_http(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            if 200 <= reply.status < 300:
                return None
            return f"{url}: HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except OSError as exc:  # refused, timed out, reset: all "not healthy"
        return f"{url}: {exc}"
    # A garbled answer or a malformed URL: one line in the pod's events, not a traceback.
    except (http.client.HTTPException, ValueError) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_check = kinds.add_parser("grpc", help="gRPC health check (grpc.health.v1)")
    grpc_check.add_argument("target", help="unix:/path or host:port")
    grpc_check.add_argument("--service", default="", help="service name ('' = the server)")
    http_check = kinds.add_parser("http", help="HTTP GET that must answer 2xx")
    http_check.add_argument("url")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kind == "grpc":
        problem = check_grpc(args.target, args.service, args.timeout)
    else:
        problem = check_http(args.url, args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return UNHEALTHY
    return HEALTHY


if __name__ == "__main__":
    sys.exit(main())
