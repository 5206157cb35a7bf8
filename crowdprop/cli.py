"""The ``crowdprop`` command line.

Parses arguments once, dispatches to :mod:`crowdprop.commands`, and maps errors
to exit codes: 0 success, 1 an unexpected bug (with its traceback), 2 bad input,
an unusable run directory, or a folder that cannot be written (a full disk, a
read-only or foreign folder: one line, no traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import pkgutil
import sys

from . import __version__
from .errors import CrowdpropError


def _command_modules():
    from . import commands

    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def environment_error(e: OSError) -> str | None:
    """One line for an OSError that the machine caused rather than a bug (a full disk,
    a read-only or foreign folder), or None. Every file crowdprop writes is replaced
    atomically, so what was there before such an error is intact."""
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    what = e.strerror or " ".join(str(e).split())
    if e.errno in _FULL or (e.errno is None and "No space left on device" in str(e)):
        return (f"{where}{what}: the disk is full; free some space and run the command again "
                "(files written before are intact)")
    if e.errno in _NOT_WRITABLE:
        return f"{where}{what}: crowdprop cannot write there (a read-only or another user's folder?)"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crowdprop",
        description="Instance masks annotated by crowd workers answering yes/no, propagated through cluster trees.",
        epilog="Start here: crowdprop replay   (a whole campaign on the shipped sample, simulated workers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crowdprop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    # -v/-q are accepted after the command too (SUPPRESS: given before it, they are not reset)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more logging (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, parents=[common],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.register(p)
        p.set_defaults(_run=mod.run)
        _describe_subcommands(p)
    return parser


def _describe_subcommands(p: argparse.ArgumentParser) -> None:
    """A subcommand (``gold import``, ``video run``) without a description shows its help line as one."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sp in action.choices.items():
                if not sp.description and helps.get(name):
                    sp.description = helps[name]
                _describe_subcommands(sp)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose == 1 else
                                              logging.DEBUG if args.verbose > 1 else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except CrowdpropError as e:
        # an error that is not a failure (exit code 0, e.g. the budget is spent) is no "error:"
        print(f"crowdprop {args.command}: {'error: ' if e.exit_code else ''}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"crowdprop {args.command}: interrupted; run it again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into `head`, which stopped reading: not an error
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        return 0
    except OSError as e:
        line = environment_error(e)
        if line is None:
            raise
        logging.getLogger(__name__).debug("%s", line, exc_info=True)
        print(f"crowdprop {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
