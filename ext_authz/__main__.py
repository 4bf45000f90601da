"""``python -m ext_authz`` is ``gateway authz``."""

import sys

from gateway.hangups import hold_hangups

# Before anything else is imported: until the server's SIGHUP handler is in, a SIGHUP is
# held rather than fatal (see gateway.hangups).
hold_hangups()

from gateway.cli import main  # noqa: E402  (after the hold, on purpose)

sys.exit(main(["authz", *sys.argv[1:]]))
