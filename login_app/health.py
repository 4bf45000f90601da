"""Liveness for the login app."""

from flask import Blueprint, jsonify

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def health():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")
