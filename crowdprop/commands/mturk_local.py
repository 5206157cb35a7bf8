"""``crowdprop mturk-local``: a local MTurk-compatible endpoint with simulated workers."""
from __future__ import annotations

import argparse
import os

NAME = "mturk-local"
HELP = ("serve a local MTurk-compatible endpoint (boto3 endpoint_url): simulated workers answer from ground truth, "
        "or you do the HITs in a browser (--no-simulate)")
ORDER = 70

EPILOG = """\
examples:
  crowdprop mturk-local runs/demo --port 8443
  crowdprop mturk-local runs/mine --no-simulate --port 8443     (do the HITs yourself: README, Do a HIT yourself)
  crowdprop mturk-local --gt instances.json --predictions results.json --spammers 0.2 --throttle 0.05

then point boto3 at the printed URL:
  boto3.client("mturk", endpoint_url=URL, region_name="us-east-1",
               aws_access_key_id="local", aws_secret_access_key="local")

Workers do each HIT as soon as it is created (--work-delay to wait). HITs whose
RequesterAnnotation contains "manual" (not a crowdprop campaign's own, whatever
its name) or all HITs with --no-simulate are left for a browser: open URL/ to
list HITs, take the qualification tests and do the HITs. URL/_ledger shows the
money. With RUN_DIR, the pictures of its HITs (RUN_DIR/hit_images) are served
under URL/images/; --no-simulate needs no ground truth.

On an address beyond loopback (--host 0.0.0.0) API calls must be signed with the
endpoint's own key pair: taken from CROWDPROP_MTURK_LOCAL_ACCESS_KEY_ID and
CROWDPROP_MTURK_LOCAL_SECRET_ACCESS_KEY, else generated and printed once at start;
give it to boto3 (or crowdprop run) as its AWS credentials. Traffic is plain HTTP.
"""
ENV_KEY_ID = "CROWDPROP_MTURK_LOCAL_ACCESS_KEY_ID"
ENV_SECRET = "CROWDPROP_MTURK_LOCAL_SECRET_ACCESS_KEY"


def register(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("run_dir_pos", nargs="?", metavar="RUN_DIR",
                   help="a run directory: its masks (gt_iou: the truth of simulated workers), config and pictures")
    src = p.add_argument_group("ground truth (one of; none with --no-simulate)")
    src.add_argument("--run-dir", metavar="RUN_DIR", help="the same as RUN_DIR")
    src.add_argument("--gt", metavar="GT_JSON", help="COCO ground-truth instances JSON (with --predictions)")
    src.add_argument("--predictions", metavar="PREDS_JSON", help="COCO results JSON (with --gt)")
    src.add_argument("--correct-iou", type=float, default=None,
                     help="a mask is correct when its IoU with ground truth is above this "
                          "(default: the run's campaign.correct_iou, else 0.75)")
    net = p.add_argument_group("endpoint")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1, loopback only; any other address requires "
                          "SigV4-signed API calls)")
    net.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    net.add_argument("--images-dir", metavar="DIR",
                     help="serve the files of DIR under URL/images/ (default: RUN_DIR/hit_images)")
    net.add_argument("--require-signature", action="store_true",
                     help=f"require signed API calls on loopback too (key pair from ${ENV_KEY_ID} and "
                          f"${ENV_SECRET}, else generated and printed once)")
    net.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                     help="seconds a client may take to send one whole request (default 30)")
    wk = p.add_argument_group("simulated workers (default: the run's [simulation] table, else its defaults)")
    wk.add_argument("--workers", type=int, default=None, help="number of workers")
    wk.add_argument("--accuracy", type=float, default=None, help="mean accuracy of ordinary workers")
    wk.add_argument("--spammers", type=float, default=None, help="share of workers answering at random")
    wk.add_argument("--sloppy", type=float, default=None, help="share of sloppy workers")
    wk.add_argument("--seed", type=int, default=None, help="seed of the worker pool (default: campaign.seed)")
    wk.add_argument("--work-delay", type=float, default=0.0, help="seconds before workers submit (default 0)")
    wk.add_argument("--unanswered", type=float, default=0.0,
                    help="share of assignment slots nobody ever takes (to exercise expiry)")
    wk.add_argument("--late", type=float, default=0.0, metavar="SHARE",
                    help="share of simulated workers who accept a HIT when due but submit --late-delay seconds "
                         "later, after the HIT expired if it did (MTurk takes work accepted before expiry)")
    wk.add_argument("--late-delay", type=float, default=60.0, metavar="SECONDS",
                    help="how much later those workers submit (default 60)")
    wk.add_argument("--auto-approve-after", type=float, default=None, metavar="SECONDS",
                    help="approve submitted work on its own this long after submission when that comes before the "
                         "HIT type's AutoApprovalDelayInSeconds (a requester who does not look in time)")
    wk.add_argument("--no-simulate", action="store_true", help="no simulated workers: HITs wait for a browser")
    wk.add_argument("--balance", type=float, default=10000.0, help="starting account balance in dollars")
    ft = p.add_argument_group("faults (on API calls only)")
    ft.add_argument("--throttle", type=float, default=0.0, help="share of requests refused with ThrottlingException")
    ft.add_argument("--errors", type=float, default=0.0, help="share of requests failing with HTTP 500/503")
    ft.add_argument("--lost-responses", type=float, default=0.0,
                    help="share of those failures that happen after the operation took effect")
    ft.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")


def _check(ok: bool, flag: str, message: str) -> None:
    from ..errors import InputError

    if not ok:
        raise InputError("command line", None, flag, message)


def _credentials(args: argparse.Namespace):
    """The key pair API calls must be signed with: None on loopback unless --require-signature."""
    from ..errors import InputError
    from ..mturk_local import Credentials
    from ..mturk_local.server import is_loopback

    key_id, secret = os.environ.get(ENV_KEY_ID), os.environ.get(ENV_SECRET)
    if not (args.require_signature or key_id or secret or not is_loopback(args.host)):
        return None
    if bool(key_id) != bool(secret):
        raise InputError("environment", None, ENV_SECRET if key_id else ENV_KEY_ID,
                         f"set both {ENV_KEY_ID} and {ENV_SECRET}, or neither")
    if not key_id or not secret:  # (both or neither, checked above)
        return Credentials.generate()
    try:
        return Credentials(key_id, secret)
    except ValueError as e:
        raise InputError("environment", None, ENV_KEY_ID, str(e)) from None


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time
    from pathlib import Path

    from .. import config as cfg
    from ..mturk_local import FaultConfig, LocalMTurk, serve
    from ..mturk_local.truth import truth_from_coco, truth_from_run_dir
    from ..errors import InputError
    from ..replay.workers import WorkerPool

    _check(not (args.run_dir and args.run_dir_pos and args.run_dir != args.run_dir_pos), "--run-dir",
           "give the run directory once (RUN_DIR or --run-dir)")
    args.run_dir = args.run_dir or args.run_dir_pos
    _check(not (args.run_dir and (args.gt or args.predictions)), "--run-dir",
           "give either RUN_DIR or --gt with --predictions")
    _check(bool(args.run_dir or args.gt or args.predictions or args.no_simulate), "RUN_DIR",
           "give RUN_DIR or --gt with --predictions (the simulated workers' ground truth), or --no-simulate")
    _check(not (args.gt or args.predictions) or bool(args.gt and args.predictions), "--predictions",
           "--gt and --predictions go together")
    _check(args.correct_iou is None or 0.0 < args.correct_iou < 1.0, "--correct-iou", "must be in (0, 1)")
    _check(0 <= args.port <= 65535, "--port", "must be in [0, 65535]")
    _check(args.work_delay >= 0, "--work-delay", "must be >= 0")
    _check(0.0 <= args.unanswered <= 1.0, "--unanswered", "must be in [0, 1]")
    _check(0.0 <= args.late <= 1.0, "--late", "must be in [0, 1]")
    _check(args.late_delay >= 0, "--late-delay", "must be >= 0")
    _check(args.auto_approve_after is None or args.auto_approve_after >= 0, "--auto-approve-after", "must be >= 0")
    for flag in ("throttle", "errors", "lost_responses"):
        _check(0.0 <= getattr(args, flag) <= 1.0, "--" + flag.replace("_", "-"), "must be in [0, 1]")
    _check(args.throttle + args.errors <= 1.0, "--errors", "--throttle + --errors must be <= 1")
    _check(args.latency >= 0, "--latency", "must be >= 0")
    _check(0 < args.request_timeout <= 3600, "--request-timeout", "must be in (0, 3600]")
    credentials = _credentials(args)

    conf = cfg.Config()
    if args.run_dir:
        conf_path = Path(args.run_dir) / "config.json"
        if conf_path.is_file():
            conf = cfg.load_json(conf_path)
        try:
            truth = truth_from_run_dir(args.run_dir, correct_iou=args.correct_iou)
        except InputError:
            if not (args.no_simulate and (Path(args.run_dir) / "masks.parquet").is_file()):
                raise
            truth = {}  # no ground truth: people answer
        source = str(args.run_dir)
        if args.images_dir is None:
            args.images_dir = str(Path(args.run_dir) / "hit_images")
            Path(args.images_dir).mkdir(exist_ok=True)  # crowdprop run draws the pictures there
    elif not (args.gt or args.predictions):
        truth, source = {}, "nowhere (--no-simulate)"
    else:
        iou = args.correct_iou if args.correct_iou is not None else conf.campaign.correct_iou
        truth = truth_from_coco(args.gt, args.predictions, correct_iou=iou)
        source = str(args.predictions)

    overrides = {k: v for k, v in (("workers", args.workers), ("accuracy", args.accuracy),
                                   ("spammer_share", args.spammers), ("sloppy_share", args.sloppy)) if v is not None}
    sim = dataclasses.replace(conf.simulation, **overrides)
    sim.validate(cfg._V("command line", "simulation"))
    seed = args.seed if args.seed is not None else conf.campaign.seed
    _check(seed >= 0, "--seed", "must be >= 0")
    pool = WorkerPool.build(sim, seed)
    faults = None
    if args.throttle or args.errors or args.latency:
        faults = FaultConfig(throttle_rate=args.throttle, error_rate=args.errors, latency_s=args.latency, seed=seed,
                             lost_response_share=args.lost_responses)
    if args.images_dir:
        _check(Path(args.images_dir).is_dir(), "--images-dir", f"{args.images_dir} is not a directory")
    local = LocalMTurk(truth, pool, balance=args.balance, faults=faults, images_dir=args.images_dir,
                       work_delay=args.work_delay, simulate=not args.no_simulate,
                       unanswered_share=args.unanswered, late_share=args.late, late_delay=args.late_delay,
                       auto_approve_after=args.auto_approve_after)
    try:
        handle = serve(local, host=args.host, port=args.port, credentials=credentials,
                       request_timeout_s=args.request_timeout)
    except OSError as e:
        _check(False, "--port", f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    n_correct = sum(truth.values())
    print(f"local MTurk endpoint: {handle.url}", flush=True)
    if credentials is not None:
        if os.environ.get(ENV_SECRET):
            print(f"  API calls must be signed (SigV4) with access key id {credentials.access_key_id} "
                  f"and the secret in ${ENV_SECRET}", flush=True)
        else:
            print("  API calls must be signed (SigV4) with this key pair, shown once: "
                  f"AWS_ACCESS_KEY_ID={credentials.access_key_id} "
                  f"AWS_SECRET_ACCESS_KEY={credentials.secret_access_key}", flush=True)
        print("  worker pages have no login and everything travels as plain HTTP", flush=True)
    print(f"  {len(truth)} masks from {source} ({n_correct} correct), {len(pool)} simulated workers "
          f"(seed {seed}){'' if local.simulate else ', simulation off'}", flush=True)
    print(f"  HITs: {handle.url}/   ledger: {handle.url}/_ledger   Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        led = local.ledger(entries=False)
        print(f"stopped: {led['hits_created']} HITs, {led['approvals']} approvals, spent ${led['spent_usd']}",
              flush=True)
        return 0
    finally:
        handle.stop()
