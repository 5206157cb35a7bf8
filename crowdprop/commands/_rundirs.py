"""Run-directory names and crowd choices shared by the commands (``replay``, ``video``).

Not a command (the CLI skips modules whose name starts with ``_``).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

RUNS_ROOT = Path("crowdprop-runs")
"""Where a replay puts its run directory when none is given."""

CROWD_CHOICES = {"mturk": "mturk", "local": "mturk-local", "simulated": "simulated"}
"""``--crowd`` on the command line -> ``campaign.json`` crowd kind."""


def new_run_dir(prefix: str, root: Path = RUNS_ROOT) -> Path:
    """A folder under ``root`` that does not exist yet: ``PREFIX-YYYYmmdd-HHMMSS`` (``-2``, ``-3`` ...
    appended when that one exists)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"{prefix}-{stamp}"
    k = 1
    while run_dir.exists():
        k += 1
        run_dir = root / f"{prefix}-{stamp}-{k}"
    return run_dir
