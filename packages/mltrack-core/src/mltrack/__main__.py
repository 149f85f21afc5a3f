"""``python -m mltrack``: the same as the ``mltrack`` command."""

from mltrack.cli import main

raise SystemExit(main())
