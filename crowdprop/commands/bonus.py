"""crowdprop bonus: pay a worker of the campaign a bonus, once, within the budget.

MTurk pays a bonus on one of the worker's assignments (SendBonus needs one):
``--assignment`` names it, else the worker's latest assignment in the run's books.
The bonus and MTurk's fee on it are checked against ``[campaign] budget_usd``
(what is paid plus what the live HITs can still cost), written to
``RUN_DIR/hit_actions.jsonl`` before SendBonus with a UniqueRequestToken derived
from the run, worker, assignment, amount and reason, and counted in the
ledger from then on. The same bonus (those four the same) is paid once however
often the command runs: MTurk refuses the token within 24 hours, and later the
bonus is found in ListBonusPayments of the assignment.
"""
from __future__ import annotations

import hashlib

from ..errors import InputError, StateError

NAME = "bonus"
HELP = "pay a worker of the campaign a bonus (once, counted against the budget)"
ORDER = 23

EPILOG = """\
examples:
  crowdprop bonus runs/cars A1B2C3D4E5 --usd 0.50 --reason "Careful work on hard masks, thank you"
  crowdprop bonus runs/cars A1B2C3D4E5 --usd 1 --reason "..." --assignment 3ABC...

Automatic bonuses per gold answered right: [crowd] bonus_cents_per_gold_correct.
"""


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("worker", metavar="WORKER", help="the worker's MTurk id")
    p.add_argument("--usd", required=True, help="the bonus in dollars (whole cents, at least 0.01)")
    p.add_argument("--reason", required=True, help="what the worker reads with the bonus")
    p.add_argument("--assignment", metavar="ASSIGNMENT_ID", help="default: the worker's latest assignment in the books")
    from .hits import add_mturk_options

    add_mturk_options(p)
    p.epilog = EPILOG


def _amount(text: str) -> int:
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(text)
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or d != d.quantize(Decimal("0.01")) or not Decimal("0.01") <= d <= 100:
        raise InputError("command line", None, "--usd", f"must be dollars in whole cents in [0.01, 100], got {text!r}")
    return int(d * 100)


def run(args) -> int:
    from ..campaign.ledger import FEES, actions, record_action
    from ..campaign.store import RunDir
    from ..money import cap_cents, fmt
    from . import hits

    rd = RunDir(args.run_dir).require()
    amount = _amount(args.usd)
    reason = " ".join(args.reason.split())
    if not 1 <= len(reason) <= 1024:
        raise InputError("command line", None, "--reason", "must be 1 to 1024 characters")
    asg = rd.read_rounds("assignments")
    mine = asg[asg["worker_id"] == args.worker] if len(asg) else asg
    if args.assignment:
        if not len(mine) or args.assignment not in set(mine["assignment_id"]):
            raise InputError("command line", None, "--assignment",
                             f"{args.assignment} is not an assignment of worker {args.worker} in {rd.path}")
        aid = args.assignment
    elif len(mine):
        aid = str(mine.sort_values("round", kind="stable")["assignment_id"].iloc[-1])
    else:
        raise InputError("command line", None, "WORKER", f"{args.worker} has no assignment recorded in {rd.path}")
    fee = FEES.bonus_fee_cents(amount)
    with rd.lock():
        backend, where = hits.connect_backend(rd, target=args.target, endpoint_url=args.endpoint_url,
                                              profile=args.profile)
        rows = hits.hit_rows(rd, backend, [b for b in hits.published_hits(rd) if not b["done"]])
        committed = hits._exposure_cents(rd, rows, backend)
        cap = cap_cents(rd.config.campaign.budget_usd)
        # the same bonus (worker, assignment, amount, reason) is paid once, however often the command runs
        key = f"{rd.campaign.get('campaign_id', '')}\x1f{rd.nonce}\x1f{args.worker}\x1f{aid}\x1f{amount}\x1f{reason}"
        token = "m-" + hashlib.sha256(key.encode()).hexdigest()[:40]
        refused = {a["id"] for a in actions(rd) if a.get("event") == "refused"}
        earlier = [a for a in actions(rd) if a.get("token") == token and a.get("event") == "send"
                   and a["id"] not in refused]
        retry = bool(earlier)
        if not retry and committed + amount + fee > cap:
            raise StateError(f"budget: a bonus of {fmt(amount)} (+ {fmt(fee)} fee) does not fit: {fmt(committed)} of "
                             f"the {fmt(cap)} cap ([campaign] budget_usd) is spent or committed; nothing was sent")
        hits._confirm(where, f"Pay {args.worker} a bonus of {fmt(amount)} (+ {fmt(fee)} fee)", assume_yes=args.yes)
        rid = earlier[0]["id"] if retry else hashlib.sha256(f"{token}{len(actions(rd))}".encode()).hexdigest()[:16]
        if not retry:  # a repeated command's record counts already
            record_action(rd, {"action": "bonus", "id": rid, "event": "send", "worker_id": args.worker,
                               "assignment_id": aid, "bonus_cents": amount, "fee_cents": fee, "reason": reason,
                               "token": token})
        try:
            how = backend.send_bonus(worker_id=args.worker, assignment_id=aid, amount_cents=amount, reason=reason,
                                     token=token, admitted=True)
        except Exception as e:
            from botocore.exceptions import ClientError

            if not isinstance(e, ClientError):
                raise
            from ..crowd.mturk import error_code

            code, turk, _, message = error_code(e)
            record_action(rd, {"id": rid, "event": "refused", "code": turk or code, "message": message[:300]})
            text = " ".join(message.split())[:200]
            raise StateError(f"bonus for {args.worker}: MTurk refused: {turk or code}: {text}") from None
        record_action(rd, {"id": rid, "event": "done", "token": token})
    print(f"{args.worker}: bonus of {fmt(amount)} (+ {fmt(fee)} MTurk fee) on assignment {aid}"
          + (" was sent before (same request); not again" if how == "already" else " sent"))
    return 0
