"""crowdprop report: questions, HITs, dollars, hours and masks per round and in total."""
from __future__ import annotations

NAME = "report"
HELP = "print the campaign report and write RUN_DIR/report.json"
ORDER = 30


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.epilog = "example:\n  crowdprop report runs/cars"


def run(args) -> int:
    import json

    from ..campaign.store import RunDir
    from ..io import atomic_write_text
    from ..report.summary import compute_report, format_report

    rd = RunDir(args.run_dir).require()
    rep = compute_report(rd)
    text = json.dumps(rep, indent=2, default=float)
    atomic_write_text(rd.path / "report.json", text)
    print(text if args.json else format_report(rep))
    return 0
