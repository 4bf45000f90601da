"""Run the development identity provider: ``python -m devtools.dev_idp --help``."""

from devtools.dev_idp.cli import main

raise SystemExit(main())
