"""``python -m ext_authz`` is ``gateway authz``."""

import sys

from gateway.cli import main

sys.exit(main(["authz", *sys.argv[1:]]))
