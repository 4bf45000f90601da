"""CLI login (device-style flow). Being written; see login_app/cli_login.py in the next commit."""

from flask import Blueprint

blueprint = Blueprint("cli_login", __name__)
