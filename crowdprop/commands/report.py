"""crowdprop report: questions, HITs, dollars, hours and masks per round and in total."""
from __future__ import annotations

NAME = "report"
HELP = "print the campaign report and write RUN_DIR/report.json (and report.html with --html)"
ORDER = 30


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--html", action="store_true",
                   help="also write RUN_DIR/report.html: one self-contained page with plots, per-class and "
                        "worker tables, costs and a gallery of accepted and rejected masks")
    p.add_argument("--images", metavar="DIR",
                   help="--html: folder with the image files (by images.parquet file_name) to draw the gallery's "
                        "masks on (default: a gray canvas)")
    p.add_argument("--gallery", type=int, default=4, metavar="N",
                   help="--html: accepted and rejected masks sampled per class (default 4)")
    p.add_argument("--gallery-classes", type=int, default=24, metavar="N",
                   help="--html: classes in the gallery, those with the most masks (default 24)")
    p.add_argument("--seed", type=int, help="--html: seed of the gallery's samples (default: the campaign seed)")
    p.epilog = ("examples:\n  crowdprop report runs/cars\n"
                "  crowdprop report runs/cars --html --images photos/     (then open runs/cars/report.html)")


def run(args) -> int:
    import json
    from pathlib import Path

    from ..campaign.store import RunDir
    from ..errors import InputError
    from ..io import atomic_write_text
    from ..report.summary import compute_report, format_report

    from ._checks import check_seed

    from .video import hand_off, is_video_run_dir

    if is_video_run_dir(args.run_dir):  # crowdprop video's run directory: its own report
        if args.html or args.images is not None or args.seed is not None:
            raise InputError("command line", None, "--html", "not for video run directories "
                                                             "(crowdprop video report RUN_DIR --plot PNG)")
        return hand_off("report", args.run_dir, json=args.json, plot=None)
    rd = RunDir(args.run_dir).require()
    check_seed(args.seed)
    if not args.html and (args.images is not None or args.seed is not None):
        raise InputError("command line", None, "--images/--seed", "apply to --html only")
    if args.images is not None and not Path(args.images).is_dir():
        raise InputError(args.images, None, "--images", "not a folder")
    for opt in ("gallery", "gallery_classes"):
        if getattr(args, opt) < 0:
            raise InputError("command line", None, "--" + opt.replace("_", "-"), "must be >= 0")
    rep = compute_report(rd)
    text = json.dumps(rep, indent=2, default=float)
    atomic_write_text(rd.path / "report.json", text)
    print(text if args.json else format_report(rep))
    if args.html:
        from ..report.html import write_report_html

        path = write_report_html(rd, rep, image_root=args.images, seed=args.seed, per_class=args.gallery,
                                 max_classes=args.gallery_classes)
        if not args.json:
            print(f"report page: {path}")
    return 0
