"""The tree's layers, held by a test: a module imports only from its own layer or below.

From the top: the `gateway` command (the composition root, the only code that imports both
servers); the two servers, which never import each other; what they share about sessions,
providers and Envoy; the Redis clients; observability; the configuration; and the few
modules everything may use. Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A name stands for that module and everything below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"gateway.errors", "gateway.proto", "gateway.crypto", "gateway.hangups"}),
    frozenset({"gateway.config"}),
    frozenset({"gateway.observability"}),
    frozenset({"gateway.redis"}),
    frozenset({"gateway.sessions", "gateway.providers", "gateway.envoy", "gateway.contract"}),
    frozenset({"ext_authz", "login_app"}),
    # `python -m ext_authz` and `python -m login_app` are the command under other names.
    frozenset({"gateway.cli", "gateway.device_client", "ext_authz.__main__", "login_app.__main__"}),
)
# Same layer, still apart: neither server may lean on the other.
APART = (("ext_authz", "login_app"), ("login_app", "ext_authz"))
PACKAGES = ("gateway", "ext_authz", "login_app")


def owner(module: str) -> str | None:
    """The LAYERS entry ``module`` belongs to (the longest matching name), None outside."""
    best = None
    for layer in LAYERS:
        for name in layer:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best)
            ):
                best = name
    return best


def level(name: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if name in layer)


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, wherever in the file the import is."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                yield ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                yield node.module


def violations(edges: Iterable[tuple[str, str]]) -> list[str]:
    """The (importer, imported) pairs that break the layering, as readable lines."""
    found = []
    for importer, imported in edges:
        lower, upper = owner(imported), owner(importer)
        if lower is None or upper is None or lower == upper:
            continue
        if (upper, lower) in APART or level(lower) > level(upper):
            found.append(f"{importer} imports {imported} ({upper} may not use {lower})")
    return found


def project_edges() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "proto" in path.parts:
                continue
            importer = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for imported in imports_of(path):
                yield importer, imported


def test_every_module_of_the_product_belongs_to_a_layer() -> None:
    unplaced = sorted(
        {importer for importer, _ in project_edges() if owner(importer) is None}
        - {"gateway", "gateway.__init__"}
    )
    assert unplaced == [], "add these modules to LAYERS"


def test_no_module_imports_a_higher_layer_or_the_other_server() -> None:
    assert violations(project_edges()) == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("gateway.sessions.store", "ext_authz.session_cache"),  # a lower layer reaching up
        ("gateway.config.model", "gateway.sessions.model"),
        ("ext_authz.decision", "login_app.redirects"),  # one server leaning on the other
        ("login_app.login", "gateway.cli"),
    ],
)
def test_the_rule_catches_what_it_is_for(importer: str, imported: str) -> None:
    assert violations([(importer, imported)]) != []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("gateway.cli", "ext_authz.server"),
        ("gateway.cli", "login_app.server"),
        ("ext_authz.refresh", "gateway.providers.client"),
        ("gateway.sessions.store", "gateway.redis.clients"),
        ("gateway.providers.client", "gateway.sessions.model"),  # one layer, side by side
    ],
)
def test_the_rule_allows_what_the_layers_draw(importer: str, imported: str) -> None:
    assert violations([(importer, imported)]) == []
