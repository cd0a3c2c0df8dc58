"""``python -m neurocine`` = the ``neurocine`` command."""

from neurocine.cli import main

raise SystemExit(main())
