"""The command-line options saying where an MTurk run publishes (``crowdprop run``'s group, shared
with ``crowdprop video run``).

Not a command (the CLI skips modules whose name starts with ``_``).
"""
from __future__ import annotations


def add_mturk_target_args(p, *, title: str = "MTurk runs (crowdprop init --crowd mturk)", images: bool = True):
    """``--target``, ``--endpoint-url``, ``--profile``, ``--yes`` (and ``--images`` for image runs)
    in an argument group; returns the group."""
    m = p.add_argument_group(title)
    m.add_argument("--target", choices=["sandbox", "production"],
                   help="where HITs go (default: the run's target, initially the sandbox); "
                        "production must always be given explicitly")
    m.add_argument("--endpoint-url", metavar="URL",
                   help="an MTurk-compatible endpoint instead of Amazon's (e.g. crowdprop mturk-local)")
    m.add_argument("--profile", metavar="NAME", help="AWS profile of ~/.aws to take credentials from")
    if images:
        m.add_argument("--images", metavar="DIR",
                       help="folder with the images' files (default: the one recorded at init, else masks on gray)")
    m.add_argument("--yes", action="store_true", help="production: do not ask for a typed confirmation")
    return m
