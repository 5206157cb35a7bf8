"""crowdprop export: masks with their final label as COCO instances JSON (or a Label Studio
import of the masks to correct); answers and golds as CSV."""
from __future__ import annotations

NAME = "export"
HELP = "write masks and their final labels as COCO instances JSON or a Label Studio import"
ORDER = 40


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", help="masks file to write (default: RUN_DIR/export/annotations.json, "
                                          "annotations_<status>.json, or labelstudio.json)")
    p.add_argument("--status", choices=["accepted", "rejected", "open", "all"],
                   help="which masks by final label (default: accepted; with --format labelstudio, rejected and "
                        "open); COCO annotations carry attributes crowdprop_label and crowdprop_source")
    p.add_argument("--format", choices=["coco", "labelstudio"], dest="fmt",
                   help="coco: COCO instances JSON (default); labelstudio: Label Studio tasks with brush masks as "
                        "pre-annotations to correct, and the labeling config beside them (.xml)")
    p.add_argument("--image-url", metavar="PREFIX",
                   help="labelstudio: put PREFIX before each image's file_name (e.g. /data/local-files/?d=photos/); "
                        "default: the image's coco_url, else its file_name")
    p.add_argument("--answers", help="usable answers as CSV in crowd-kit's long format (task, worker, label); "
                                     "text starting with = + - @ tab or CR gets a leading ' (no spreadsheet formulas)")
    p.add_argument("--golds", help="the gold pool as CSV (task, label)")
    p.epilog = ("examples:\n  crowdprop export runs/cars\n"
                "  crowdprop export runs/cars --status all -o labelled.json\n"
                "  crowdprop export runs/cars --format labelstudio --image-url /data/local-files/?d=cars/\n"
                "  crowdprop export runs/cars --answers answers.csv --golds golds.csv\n"
                "  crowdprop aggregate answers.csv --gold golds.csv --method ds -o labels.csv")


def run(args) -> int:
    from ..campaign.export import csv_text
    from ..campaign.store import RunDir
    from ..io import atomic_write_text

    from .video import hand_off, is_video_run_dir

    if is_video_run_dir(args.run_dir):  # crowdprop video's run directory: label PNGs and semantic JSON
        from ..errors import InputError

        for flag, value in (("--status", args.status), ("--format", args.fmt), ("--image-url", args.image_url),
                            ("--answers", args.answers), ("--golds", args.golds)):
            if value:
                raise InputError("command line", None, flag, "not for video run directories "
                                                             "(crowdprop video export RUN_DIR [-o DIR])")
        return hand_off("export", args.run_dir, out=args.output)
    rd = RunDir(args.run_dir).require()
    if args.output or args.status or args.fmt or not (args.answers or args.golds):
        _write_masks(rd, args)
    if args.answers or args.golds:
        from ..campaign.golds import answers_long

        long, gold = answers_long(rd)
        if args.answers:
            atomic_write_text(args.answers, csv_text(long))
            print(f"wrote {len(long)} answers to {args.answers}")
        if args.golds:
            atomic_write_text(args.golds, csv_text(gold))
            print(f"wrote {len(gold)} golds to {args.golds}")
    return 0


def _write_masks(rd, args) -> None:
    """Masks by final label, to ``-o`` or the run's default export file."""
    from ..campaign.export import default_export_path, export_annotations
    from ..errors import InputError

    fmt = args.fmt or "coco"
    if args.image_url is not None and fmt != "labelstudio":
        raise InputError("command line", None, "--image-url", "applies to --format labelstudio only")
    out = args.output or default_export_path(rd, fmt, args.status or "accepted")
    if fmt == "labelstudio":
        from ..campaign.labelstudio import DEFAULT_STATUSES, config_path, export_labelstudio

        statuses = (DEFAULT_STATUSES if args.status is None else
                    ("accepted", "rejected", "open") if args.status == "all" else (args.status,))
        n = export_labelstudio(rd, out, statuses=statuses, image_url=args.image_url)
        print(f"wrote {n} {' and '.join(statuses)} masks as Label Studio tasks to {out} "
              f"(labeling config: {config_path(out)})")
    else:
        status = args.status or "accepted"
        n = export_annotations(rd, out, status)
        print(f"wrote {n} {'' if status == 'all' else status + ' '}masks as COCO instances to {out}")
