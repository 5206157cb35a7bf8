"""crowdprop video: human-in-the-loop semantic segmentation of a whole video (see crowdprop.video)."""
from __future__ import annotations

from ._mturk_args import add_mturk_target_args
from ._rundirs import CROWD_CHOICES

NAME = "video"
HELP = "video mode: label every frame of a video from a few crowd clicks (active selection + fine-tuning)"
ORDER = 40

SUBCOMMANDS = ("init", "run", "status", "report", "export", "replay", "synth", "pretrain", "gold")


def _common_init(p, required: bool):
    p.add_argument("--frames", required=required, help="a folder of frames (images in name order) or a video file")
    p.add_argument("--labels", required=required, help="labels.json: {\"classes\": [{\"id\": 0, \"name\": ...}]}")
    p.add_argument("--model", help="checkpoint of the network (default: the shipped sample's, "
                                   "from crowdprop video pretrain)")
    p.add_argument("--gt", help="folder of ground-truth label maps (replay: simulated workers answer from it)")
    p.add_argument("--config", help="TOML with [video], [campaign], [crowd], [quality], [simulation], [mturk]")
    p.add_argument("--seed", type=int, help="override [campaign] seed")
    p.add_argument("--granularity", choices=["frame", "patch", "superpixel"], help="override [video] granularity")
    p.add_argument("--method", choices=["active", "uncertainty", "random", "keyframe"],
                   help="override [video] method")
    _engine_args(p, "init's per-chunk work (superpixels, flow, the network's labels)")


def _engine_args(p, what: str) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help=f"where {what} runs: local (this process, or --workers processes) or ray (Ray tasks; "
                        "RAY_ADDRESS or a local Ray)")
    p.add_argument("--workers", type=int, help="processes (local) or CPUs of a local Ray (default: 1 for local, "
                                               "this machine's CPUs for ray)")


def register(p):
    sub = p.add_subparsers(dest="video_command", metavar="SUBCOMMAND")
    import argparse

    fmt = argparse.RawDescriptionHelpFormatter
    q = sub.add_parser("init", help="check the inputs and create a video run directory", formatter_class=fmt)
    q.add_argument("run_dir", metavar="RUN_DIR")
    _common_init(q, True)
    q.add_argument("--crowd", choices=list(CROWD_CHOICES),
                   help="who answers: MTurk (the sandbox unless 'crowdprop video run --target' says otherwise), "
                        "local (simulated workers behind a local MTurk-compatible endpoint, boto3 all the way; "
                        "needs --gt) or simulated (in process; needs --gt); default: simulated with --gt, "
                        "else mturk")
    q.epilog = ("example:\n  crowdprop video init runs/clip --frames clip.mp4 --labels labels.json --gt gt/ "
                "--model net.pt")
    q = sub.add_parser("run", help="run or continue the rounds (select, ask, fine-tune)", formatter_class=fmt)
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--rounds", type=int, help="at most this many more rounds")
    _engine_args(q, "the rounds' inference (selection's and the final labels; fine-tuning stays in this process)")
    add_mturk_target_args(q, title="MTurk runs (crowdprop video init --crowd mturk)", images=False)
    q.epilog = ("examples:\n  crowdprop video run runs/clip --rounds 2\n"
                "  crowdprop video run runs/clip --endpoint-url http://127.0.0.1:8443   (an MTurk run on "
                "crowdprop mturk-local --no-simulate --images-dir runs/clip/hit_images: do the HITs in a "
                "browser)\n  crowdprop video run runs/clip --target production\n"
                "crowdprop run RUN_DIR does the same on a video run directory.")
    q = sub.add_parser("status", help="where a video campaign stands", formatter_class=fmt)
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--json", action="store_true")
    q.epilog = "example:\n  crowdprop video status runs/clip"
    q = sub.add_parser("report", help="mIoU against clicks per round; writes RUN_DIR/report.json",
                       formatter_class=fmt)
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--json", action="store_true", help="print report.json")
    q.add_argument("--plot", metavar="PNG", help="also draw mIoU against clicks into this PNG")
    q.epilog = "example:\n  crowdprop video report runs/clip --plot curve.png"
    q = sub.add_parser("export", help="label PNGs per frame and COCO semantic JSON", formatter_class=fmt)
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("-o", "--out", help="folder (default RUN_DIR/export)")
    q.epilog = "example:\n  crowdprop video export runs/clip -o labels/"
    q = sub.add_parser("replay", help="init + run + report with simulated workers on the shipped sample "
                                      "(or --frames/--labels/--gt)", formatter_class=fmt)
    _common_init(q, False)
    q.add_argument("--run-dir", help="run directory (default: a new folder under ./crowdprop-runs/)")
    q.add_argument("--crowd", choices=["simulated", "local"], default="simulated",
                   help="simulated: in process (default); local: simulated workers behind a local "
                        "MTurk-compatible endpoint, through boto3")
    q.add_argument("--rounds", type=int, help="override [video] rounds")
    q.add_argument("--json", action="store_true", help="print report.json instead of the table")
    q.epilog = ("examples:\n  crowdprop video replay\n  crowdprop video replay --granularity patch --json\n"
                "An interrupted replay continues with: crowdprop video run RUN_DIR")
    q = sub.add_parser("synth", help="write synthetic clips (frames, ground truth, labels.json, motion)",
                       formatter_class=fmt)
    q.add_argument("-o", "--out", required=True, help="folder; clip i goes to OUT/clip-<i>")
    q.add_argument("--clips", type=int, default=1)
    q.add_argument("--frames", type=int, default=12)
    q.add_argument("--size", type=int, default=48)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--domain", choices=["heldout", "pretrain"], default="heldout")
    q.epilog = "example:\n  crowdprop video synth -o clips/ --clips 3 --seed 7"
    q = sub.add_parser("pretrain", help="train the network on synthetic pretraining clips and save it",
                       formatter_class=fmt)
    q.add_argument("-o", "--out", required=True, help="checkpoint file (.pt)")
    q.add_argument("--steps", type=int, default=500)
    q.add_argument("--clips", type=int, default=24)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--arch", choices=["smallseg", "lraspp"], default="smallseg")
    q.epilog = "example:\n  crowdprop video pretrain -o net.pt   (the shipped sample's network: --steps 500 --seed 0)"
    p.epilog = "subcommands: " + ", ".join(SUBCOMMANDS) + "; each has --help.\nStart here: crowdprop video replay"
    from . import _video_gold as video_gold

    video_gold.register(sub, fmt)


def _crowd(choice: str) -> dict:
    """campaign.json's crowd entry for ``--crowd``."""
    kind = CROWD_CHOICES[choice]
    return {"kind": kind, **({"target": "sandbox"} if kind == "mturk" else {})}


def _need_extras(need_torch: bool = True) -> None:
    from ..errors import MissingExtra

    if need_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MissingExtra("detect", "torch") from None
    for mod, pkg in (("cv2", "opencv-python-headless"), ("skimage", "scikit-image")):
        try:
            __import__(mod)
        except ImportError:
            raise MissingExtra("video", pkg) from None


def _workers(args) -> int | None:
    from ..errors import InputError

    workers = getattr(args, "workers", None)
    if workers is not None and not 1 <= workers <= 1024:
        raise InputError("command line", None, "--workers", "must be in [1, 1024]")
    return workers


def _overrides(args) -> dict:
    ov: dict = {"video": {}}
    if getattr(args, "granularity", None):
        ov["video"]["granularity"] = args.granularity
    if getattr(args, "method", None):
        ov["video"]["method"] = args.method
    if getattr(args, "rounds", None) is not None and args.video_command == "replay":
        ov["video"]["rounds"] = args.rounds
    return ov


def _print_round(m) -> None:
    miou = "-" if m["miou"] is None else f"{m['miou']:.3f}"
    print(f"round {m['round']}: {m['clicks']} clicks ({m['clicks_share']:.1%} of manual), mIoU {miou}", flush=True)


def run(args) -> int:
    import json

    from ..errors import InputError
    from ._checks import check_seed

    cmd = args.video_command
    if cmd is None:
        print("crowdprop video: give a subcommand: " + ", ".join(SUBCOMMANDS) + " (crowdprop video --help)")
        return 2
    if cmd == "gold":
        from . import _video_gold as video_gold

        return video_gold.run(args)
    if cmd == "synth":
        _need_extras(need_torch=False)
        from pathlib import Path

        from ..video.synth import make_clips, write_clip

        if args.clips < 1 or args.frames < 2 or args.size < 16:
            raise InputError("command line", None, "--clips/--frames/--size",
                             "need clips >= 1, frames >= 2, size >= 16")
        for i, c in enumerate(make_clips(args.clips, args.seed, domain=args.domain, frames=args.frames,
                                         size=args.size)):
            print(write_clip(c, Path(args.out) / f"clip-{i}"))
        return 0
    if cmd == "pretrain":
        _need_extras()
        import torch

        from ..video import model as vmodel

        torch.set_num_threads(1)
        ck = vmodel.pretrain(clips=args.clips, steps=args.steps, seed=args.seed, arch=args.arch)
        vmodel.save(ck, args.out)
        print(f"saved {args.out}")
        return 0
    if cmd in ("init", "replay"):
        check_seed(args.seed)
    if cmd == "init":
        _need_extras()
        from ..video.run import init_video

        vr = init_video(args.run_dir, frames=args.frames, labels=args.labels, model=args.model, gt=args.gt,
                        config=args.config, seed=args.seed, overrides=_overrides(args),
                        crowd=_crowd(args.crowd or ("simulated" if args.gt else "mturk")),
                        engine=args.engine, workers=_workers(args))
        m = vr.metrics()[0]
        print(f"video run directory {vr.path}: {vr.campaign['frames']} frames, classes {', '.join(vr.classes)}"
              + ("" if m["miou"] is None else f"; the network's mIoU before any click {m['miou']:.3f}"))
        if vr.crowd_kind() == "mturk":
            print(f"its crowd is MTurk: crowdprop run {vr.path} publishes on the sandbox (--target production, "
                  "--endpoint-url URL for others); workers see the pictures through [mturk] s3_bucket or "
                  "image_base_url")
        return 0
    if cmd == "run":
        return run_video_dir(args)
    if cmd == "replay":
        _need_extras()
        from pathlib import Path

        from ._rundirs import new_run_dir

        from ..video.report import compute, format_table, write
        from ..video.run import init_video, run as run_video, sample_model_path

        frames, labels, gt = args.frames, args.labels, args.gt
        if frames is None and labels is None and gt is None:
            from importlib.resources import files

            d = Path(str(files("crowdprop.data") / "video_sample"))
            frames, labels, gt = d / "frames", d / "labels.json", d / "gt"
            config = args.config or d / "config.toml"
        elif frames is None or labels is None or gt is None:
            raise InputError("command line", None, "--frames/--labels/--gt", "give all three, or none for the sample")
        else:
            config = args.config
        if args.rounds is not None and args.rounds < 1:
            raise InputError("command line", None, "--rounds", "must be >= 1")
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir("video")
        if not args.json:
            print(f"run directory: {run_dir}")
        vr = init_video(run_dir, frames=frames, labels=labels, model=args.model or sample_model_path(), gt=gt,
                        config=config, seed=args.seed, overrides=_overrides(args), crowd=_crowd(args.crowd),
                        engine=args.engine, workers=_workers(args))
        run_video(vr.path, progress=None if args.json else _print_round, engine=args.engine, workers=_workers(args))
        rep = compute(vr)
        write(vr, rep)
        print(json.dumps(rep, indent=1) if args.json else format_table(rep))
        return 0
    from ..video.run import VideoRun

    vr = VideoRun(args.run_dir).require()
    if cmd == "status":
        ms = vr.metrics()
        m = ms[-1]
        busy = sorted(p.name for p in (vr.path / "journal").iterdir()) if (vr.path / "journal").is_dir() else []
        st = {"round": m["round"], "of": vr.config.video.rounds, "clicks": m["clicks"],
              "clicks_share": m["clicks_share"], "spent_usd": m["cents"] / 100, "miou": m["miou"],
              "in_progress": busy}
        if args.json:
            print(json.dumps(st))
        else:
            miou = "-" if m["miou"] is None else f"{m['miou']:.3f}"
            print(f"round {m['round']} of {st['of']}; {m['clicks']} clicks ({m['clicks_share']:.1%} of manual); "
                  f"spent ${m['cents'] / 100:.2f}; mIoU {miou}" + (f"; in progress: {busy[0]}" if busy else ""))
        return 0
    if cmd == "report":
        from ..video.report import compute, format_table, plot, write

        rep = compute(vr)
        write(vr, rep)
        if args.plot:
            plot(rep, args.plot)
        print(json.dumps(rep, indent=1) if args.json else format_table(rep))
        return 0
    if cmd == "export":
        from ..video.export import export

        print(f"wrote {export(vr, args.out)} (labels/*.png, semantic.json)")
        return 0
    raise AssertionError(cmd)


def hand_off(command: str, run_dir: str, **options) -> int:
    """``crowdprop status|report|export`` on a video run directory: what ``crowdprop video
    <command>`` does, with its options."""
    import argparse

    return run(argparse.Namespace(video_command=command, run_dir=run_dir, **options))


def is_video_run_dir(path) -> bool:
    """Whether ``path`` holds a video run directory (``campaign.json`` of kind ``video``)."""
    import json
    from pathlib import Path

    try:
        data = json.loads((Path(path) / "campaign.json").read_text())
    except (OSError, ValueError, RecursionError):  # unreadable: the image commands say what is wrong
        return False
    return isinstance(data, dict) and data.get("kind") == "video"


def run_video_dir(args) -> int:
    """``crowdprop video run`` (and ``crowdprop run`` on a video run directory): the next rounds,
    with the run's crowd; an MTurk run publishes where ``--target``/``--endpoint-url`` or the run say."""
    import sys

    from ..errors import InputError, StateError
    from ._checks import connect_error, strip_credentials

    _need_extras()
    from ..video.run import VideoRun, run as run_video

    if args.rounds is not None and args.rounds < 1:
        raise InputError("command line", None, "--rounds", "must be >= 1")
    if getattr(args, "dry_run", False):
        raise InputError("command line", None, "--dry-run", "not available for video run directories")
    if getattr(args, "images", None):
        raise InputError("command line", None, "--images", "not for video run directories (frames.npz holds "
                                                           "the pictures)")
    endpoint_url = strip_credentials(getattr(args, "endpoint_url", None))
    vr = VideoRun(args.run_dir).require()
    opts = {"target": getattr(args, "target", None), "endpoint_url": endpoint_url,
            "profile": getattr(args, "profile", None)}
    if vr.crowd_kind() != "mturk":
        if any(v is not None for v in opts.values()) or getattr(args, "yes", False):
            raise StateError(f"{vr.path}: its crowd is '{vr.crowd_kind()}'; --target/--endpoint-url/--profile/--yes "
                             "apply to MTurk runs only (crowdprop video init --crowd mturk)")
        run_video(vr.path, rounds=args.rounds, progress=_print_round, engine=getattr(args, "engine", "local"),
                  workers=_workers(args))
        return 0
    from ..video import hits

    with vr.lock():
        where = hits.resolve_target(vr, **opts)
        if where.target == "production" and not getattr(args, "yes", False):
            if not sys.stdin.isatty():
                raise StateError("--target production needs a typed confirmation on a terminal, or --yes")
            if input('Type "yes" to publish video HITs on the production MTurk: ').strip() != "yes":
                print("crowdprop video run: not confirmed; nothing was published", file=sys.stderr)
                return 2
        try:
            crowd = hits.connect(vr, where)
        except Exception as e:
            connect_error(e)
            raise
        hits.record_target(vr, where)
        print(f"{vr.path}: publishing on {where.describe()}", flush=True)
        try:
            run_video(vr.path, rounds=args.rounds, progress=_print_round, crowd=crowd,
                      engine=getattr(args, "engine", "local"), workers=_workers(args))
        except KeyboardInterrupt:
            live = hits.open_hits(vr)
            if live:
                print(f"crowdprop video run: {len(live)} HIT(s) of {vr.path} may still be live on MTurk (workers can "
                      "take them, and MTurk approves submitted work on its own after the auto-approval delay); "
                      "run again to continue: their work is collected, judged and settled then", file=sys.stderr)
            raise
        finally:
            crowd.close()
    return 0
