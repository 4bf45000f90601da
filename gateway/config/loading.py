"""Reading the configuration: one YAML file plus environment overrides for secrets.

Everything is read once at start-up into a frozen, validated object. Nothing else in the
project reads ``os.environ``; the CLI hands the environment to :func:`load_config`.

Secrets never need to live in the file. These environment variables override it:

- ``GATEWAY_SECRET_KEYS``: comma-separated server secrets, newest first (key rotation).
- ``GATEWAY_REDIS_URL``: the Redis URL (it may carry a password).
- ``GATEWAY_PROVIDER_<ID>_CLIENT_SECRET``: a provider's client secret, and
  ``GATEWAY_PROVIDER_<ID>_PRIVATE_KEY`` its private_key_jwt key; ``<ID>`` is the provider id
  upper-cased with every character outside ``A-Z0-9`` replaced by ``_``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from gateway.config.model import GatewayConfig
from gateway.config.providers import provider_variable
from gateway.errors import ConfigError


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    if environ.get("GATEWAY_SECRET_KEYS"):
        keys = [k.strip() for k in environ["GATEWAY_SECRET_KEYS"].split(",") if k.strip()]
        raw.setdefault("session", {})
        if isinstance(raw["session"], dict):
            raw["session"]["secret_keys"] = keys
    if environ.get("GATEWAY_REDIS_URL"):
        raw.setdefault("redis", {})
        if isinstance(raw["redis"], dict):
            raw["redis"]["url"] = environ["GATEWAY_REDIS_URL"]
    providers = raw.get("providers")
    for provider in providers if isinstance(providers, list) else ():
        if isinstance(provider, dict) and isinstance(provider.get("id"), str):
            for variable, key in (
                ("CLIENT_SECRET", "client_secret"),
                ("PRIVATE_KEY", "private_key"),
            ):
                secret = environ.get(provider_variable(provider["id"], variable))
                if secret:
                    provider[key] = secret
    return raw


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            location += (
                f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
            )
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location or '(top level)'}: {message}")
    return "; ".join(lines)


def parse_config(raw: Any, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate already-parsed YAML data (plus environment overrides) into a config."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level): the configuration must be a mapping")
    # Work on a copy: secrets from the environment must not leak into the caller's data.
    raw = _apply_environment(copy.deepcopy(raw), environ or {})
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without the excerpt of the file PyYAML quotes: the offending
    line may carry a client secret, and this message goes to logs."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(error, yaml.reader.ReaderError):
        return str(error)  # a character's code and position, no excerpt
    return type(error).__name__


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, override from the environment and validate the configuration file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    return parse_config(raw, environ)
