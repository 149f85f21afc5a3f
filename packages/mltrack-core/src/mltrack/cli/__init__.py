"""The ``mltrack`` command (also ``python -m mltrack``): a thin layer over ``ExperimentRepository``.

Exit codes: 0 ok, 1 error (message on stderr says what to do), 2 usage error.

``app`` holds the command group and ``main``; ``commands`` the commands that read and manage
runs; ``export``, ``plot`` and ``ui`` one command each; ``formatting`` how they print; ``store``
how they open the configured stores; ``plugin_commands`` the commands installed plugins add
(hook ``mltrack_register_commands``).
"""

from mltrack.cli.app import cli, main

__all__ = ["cli", "main"]
