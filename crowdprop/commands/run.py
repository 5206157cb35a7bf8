"""crowdprop run: continue a campaign from its last completed round."""
from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from typing import cast

from ..errors import InputError
from ._checks import connect_error, strip_credentials

NAME = "run"
HELP = "run (or continue) a campaign from its last completed round"
ORDER = 20

EPILOG = """\
examples:
  crowdprop run runs/cars                          (the MTurk sandbox, or the run's simulated crowd)
  crowdprop run runs/cars --rounds 1
  crowdprop run runs/cars --images photos/         (draw the masks on the photos in photos/)
  crowdprop run runs/cars --endpoint-url http://127.0.0.1:8443   (crowdprop mturk-local runs/cars)
  crowdprop run runs/cars --target production      (real money: shows what the budget buys, asks to type yes)
  crowdprop run runs/cars --dry-run                 (the next round's HITs and cost; nothing is published)

Credentials come from the AWS chain only (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
~/.aws, --profile); crowdprop never prints, logs or writes them to RUN_DIR (a user
name and password typed into --endpoint-url are dropped, not used or stored).
Workers see the pictures through [mturk] s3_bucket (presigned URLs: they carry
the access key id, and a session token with temporary credentials; never the
secret key), s3_bucket with s3_public = true (plain URLs, nothing of the
credentials), or [mturk] image_base_url (RUN_DIR/hit_images served at that URL).
"""


def register(p):
    from ._mturk_args import add_mturk_target_args

    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--rounds", type=int, help="stop after this many rounds")
    add_mturk_target_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the next round's HITs and what they can cost; publish nothing, change nothing")
    p.epilog = EPILOG


def _confirm_production(rd, backend, *, assume_yes: bool) -> bool:
    """Print what the remaining budget buys and the balance; ask to type yes (unless ``assume_yes``)."""
    from ..campaign.ledger import hit_cost_estimate

    e = hit_cost_estimate(rd)
    cfg = rd.config
    print(f"production MTurk: ${e['remaining_usd']:.2f} of the ${cfg.campaign.budget_usd:.2f} budget is left "
          f"(${e['spent_usd']:.2f} spent); it buys at most {e['hits']} HITs of {e['questions_per_hit']} questions, "
          f"each {e['assignments']} x (${e['reward_usd']:.2f} reward + ${e['fee_usd']:.2f} MTurk fee) "
          f"= ${e['hit_usd']:.2f}", flush=True)
    balance = backend.balance()
    print(f"account balance: ${balance:.2f}", flush=True)
    if balance + 1e-9 < e["remaining_usd"]:
        n = int(balance // e["hit_usd"]) if e["hit_usd"] > 0 else 0
        print(f"warning: the balance pays for only {n} of those HITs; approvals fail once it is spent", flush=True)
    if assume_yes:
        return True
    try:
        answer = input('Type "yes" to publish HITs on the production MTurk: ')
    except EOFError:
        answer = ""
    return answer.strip() == "yes"


def _raise_crowd_error(e: Exception, rd) -> None:
    """MTurk refusing (after the bounded retries) or unreachable: one line, exit 2, not a traceback.
    Everything done so far is in the run directory; running again continues from there."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return
    if isinstance(e, (ClientError, BotoCoreError)):
        from ..crowd.mturk import MTurkError

        text = " ".join(str(e).split())[:300]
        raise MTurkError(f"{text}; nothing is lost: run 'crowdprop run {rd.path}' again to continue") from None


CAMPAIGN_LOG = "campaign.log"
"""``RUN_DIR/campaign.log``: every round, API error and retry of ``crowdprop run`` (INFO and up), rotated
at 5 MB with 3 old files kept (campaign.log.1 ...)."""


class _CampaignLog(RotatingFileHandler):
    """campaign.log's handler."""

    saved_level = logging.NOTSET
    """The ``crowdprop`` logger's level before the run, restored by :func:`_close_log`."""


def _campaign_log(rd) -> logging.Handler:
    """Attach ``RUN_DIR/campaign.log`` to the ``crowdprop`` loggers for this run (the terminal keeps its
    level: -v / -q)."""
    root = logging.getLogger()
    for h in root.handlers:  # what reached the terminal before still does, no more
        if h.level == logging.NOTSET:
            h.setLevel(root.getEffectiveLevel())
    handler = _CampaignLog(rd.path / CAMPAIGN_LOG, maxBytes=5_000_000, backupCount=3, encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    lg = logging.getLogger("crowdprop")
    handler.saved_level = lg.level
    lg.setLevel(min(lg.getEffectiveLevel(), logging.INFO))
    lg.addHandler(handler)
    logging.getLogger(__name__).info("crowdprop run %s (pid %d)", rd.path, os.getpid())
    return handler


def _close_log(handler: logging.Handler) -> None:
    lg = logging.getLogger("crowdprop")
    lg.removeHandler(handler)
    lg.setLevel(getattr(handler, "saved_level", logging.NOTSET))  # _campaign_log's handler
    handler.close()


def _dry_run(rd) -> int:
    """Print the HITs the next round would publish (its frozen plan if it is in progress) and what they
    can cost; nothing is published and nothing of the campaign is written."""
    from ..campaign import roundplan as rp
    from ..campaign.ledger import FEES, spent_cents
    from ..campaign.loop import Campaign, load_state
    from ..crowd.base import CrowdBackend
    from ..money import cap_cents, fmt

    class _NoCrowd:  # the plan needs no crowd; nothing may be sent
        name = "dry-run"

    camp = Campaign(rd, cast(CrowdBackend, _NoCrowd()), progress=False)  # planning calls none of its methods
    state = load_state(rd)
    r = state.next_round
    restored = rp.restore(rd, r)
    if restored is not None:
        planned, note = restored[0], f"round {r} is in progress; its frozen plan"
    else:
        planned, note = camp._make_plan(r, state), f"round {r} would publish"
        if planned.stop is None:
            planned = camp._fit_budget(r, planned)
    if planned.stop is not None or not planned.hits:
        print(f"{rd.path}: dry run: round {r} publishes nothing ({planned.stop or 'no HIT planned'}); "
              "nothing was published or written")
        return 0
    hits = planned.hits
    print(f"{rd.path}: dry run: {note}: {len(hits)} HIT(s), {sum(len(h.questions) for h in hits)} questions "
          f"({sum(q.is_gold for h in hits for q in h.questions)} gold)")
    print("  HIT  questions  gold  assignments  reward  fee  most cost")
    rewards = fees = bonus = 0
    for k, h in enumerate(hits, start=1):
        fee = FEES.assignment_fee_cents(h.reward_cents, h.assignments)
        most = camp._hit_most_cents(h)
        rewards += h.assignments * h.reward_cents
        fees += h.assignments * fee
        bonus += most - h.assignments * (h.reward_cents + fee)
        if k <= 20 or k == len(hits):
            print(f"  {k:>3}  {len(h.questions):>9}  {sum(q.is_gold for q in h.questions):>4}  {h.assignments:>11}  "
                  f"{fmt(h.reward_cents):>6}  {fmt(fee):>4}  {fmt(most):>9}")
        elif k == 21:
            print("  ...")
    extra = f" + gold bonuses up to {fmt(bonus)}" if bonus else ""
    print(f"  at most {fmt(rewards + fees + bonus)} (rewards {fmt(rewards)} + MTurk fees {fmt(fees)}{extra}); "
          f"{fmt(spent_cents(rd))} spent of the {fmt(cap_cents(rd.config.campaign.budget_usd))} budget")
    print("nothing was published or written (crowdprop run without --dry-run publishes it)")
    return 0


def _say_live(rd, crowd) -> None:
    """After Ctrl-C: how many of the run's HITs are still live (GetHIT each) and the command that expires them."""
    from .hits import live_count

    try:
        live, checked = live_count(rd, crowd.backend)
    except BaseException as e:  # noqa: BLE001 - a second Ctrl-C or MTurk unreachable: say what is known
        print(f"crowdprop run: could not ask MTurk which HITs are still live ({type(e).__name__}); "
              f"crowdprop hits {rd.path} list shows them", file=sys.stderr)
        return
    if live:
        print(f"crowdprop run: {live} HIT(s) of {rd.path} are still live on MTurk (workers can take them, and "
              f"MTurk approves submitted work on its own after the auto-approval delay); take them off the market "
              f"with: crowdprop hits {rd.path} expire   (or run again to continue)", file=sys.stderr)
    else:
        print(f"crowdprop run: none of the {checked} open HIT(s) of {rd.path} is live on MTurk", file=sys.stderr)


def run(args) -> int:
    from ..campaign.store import RunDir
    from .video import is_video_run_dir, run_video_dir

    if is_video_run_dir(args.run_dir):  # crowdprop video's run directory: its own round loop
        return run_video_dir(args)
    args.endpoint_url = strip_credentials(args.endpoint_url)
    rd = RunDir(args.run_dir).require()
    if args.rounds is not None and args.rounds < 1:
        raise InputError("command line", None, "--rounds", "must be >= 1")
    with rd.lock():  # before anything reads or writes the run directory: a refused run changes nothing
        return _run_locked(args, rd)


def _run_locked(args, rd) -> int:
    from ..crowd import factory as bk
    from ..campaign.loop import Campaign
    from ..crowd.base import CrowdBackend, CrowdKind
    from ..errors import StateError

    kind = bk.crowd_kind(rd)
    mturk_opts = {"target": args.target, "endpoint_url": args.endpoint_url, "profile": args.profile,
                  "image_root": args.images}
    if kind == CrowdKind.MTURK:
        where = bk.resolve_target(rd, **mturk_opts)
        where.endpoint_url = strip_credentials(where.endpoint_url, quiet=True)  # one recorded before they were dropped
        if where.target == "production" and not args.yes and not sys.stdin.isatty():
            raise StateError("--target production needs a typed confirmation on a terminal, or --yes")
    elif any(v is not None for v in mturk_opts.values()) or args.yes:
        raise StateError(f"{rd.path}: its crowd is '{kind}'; --target/--endpoint-url/--profile/--images/--yes "
                         "apply to MTurk runs only (crowdprop init --crowd mturk)")
    if not rd.has_forest:
        from ..campaign.init import build_trees

        build_trees(rd, progress=None)
    if args.dry_run:
        return _dry_run(rd)
    backend: CrowdBackend
    if kind == CrowdKind.MTURK:
        try:
            backend = bk.mturk_backend(rd, where)
        except Exception as e:
            connect_error(e)
            raise
        if where.target == "production" and not _confirm_production(rd, backend, assume_yes=args.yes):
            backend.close()
            print("crowdprop run: not confirmed; nothing was published", file=sys.stderr)
            return 2
        bk.record_target(rd, where)
        print(f"{rd.path}: publishing on {where.describe()}", flush=True)
        if where.target == "local":
            print(f"  workers' page: {(where.endpoint_url or '').rstrip('/')}/   (open it to do the HITs yourself; "
                  "see README, Do a HIT yourself)", flush=True)
        elif where.target == "sandbox" and not where.endpoint_url:
            print("  workers' page: https://workersandbox.mturk.com/   (sign in as a worker and search for the HITs' "
                  "title to do them yourself)", flush=True)
    else:
        backend = bk.make_backend(rd)
    handler = _campaign_log(rd)
    try:
        res = Campaign(rd, backend).run(max_rounds=args.rounds)
    except KeyboardInterrupt:
        logging.getLogger(__name__).warning("interrupted (Ctrl-C)")
        if kind == CrowdKind.MTURK:
            _say_live(rd, backend)
        raise
    except Exception as e:
        logging.getLogger(__name__).error("stopped by %s: %s", type(e).__name__, " ".join(str(e).split())[:500])
        _raise_crowd_error(e, rd)
        raise
    finally:
        backend.close()
        _close_log(handler)
    print(f"{rd.path}: {res.rounds_run} round(s) run, stopped: {res.stop_reason}; "
          f"see: crowdprop report {rd.path}")
    return 0
