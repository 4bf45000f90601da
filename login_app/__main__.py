"""``python -m login_app`` is ``gateway login``."""

import sys

from gateway.cli import main

sys.exit(main(["login", *sys.argv[1:]]))
