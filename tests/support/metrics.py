"""Reading a component's Prometheus /metrics endpoint."""

from __future__ import annotations

import requests


def metrics(address: str) -> str:
    return requests.get(f"http://{address}/metrics", timeout=5).text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample with exactly these labels (in any order), 0 when absent."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        found = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if "=" in pair)
        if metric == name and {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return 0.0
