"""crowdprop hits: see and manage every HIT a campaign published (list, expire, extend, delete).

Every HIT the run directory knows is listed with what MTurk says of it now
(GetHIT): committed rounds' ``hits`` tables and the journal of a round in
progress. Each action is written to ``RUN_DIR/hit_actions.jsonl`` (and fsynced)
before it is sent, and its outcome after (:mod:`crowdprop.campaign.ledger`).

- ``expire``: UpdateExpirationForHIT to now. Workers who accepted before keep
  their assignment duration to submit (late work); the next ``crowdprop run``
  records, judges and pays it.
- ``extend --hours H``: UpdateExpirationForHIT to H hours after the later of now
  and the HIT's expiry. ``extend --assignments N``: CreateAdditionalAssignmentsForHIT
  with a UniqueRequestToken derived from the run, the HIT, how many extensions it
  had and N, so a retried command adds them once; refused when the budget cap
  cannot pay N more assignments, or when MaxAssignments would cross 10.
- ``delete``: DeleteHIT, only for a HIT that MTurk holds Reviewable with every
  submitted assignment approved or rejected, and whose assignments are all in the
  run directory's books (deleting it earlier would lose work that MTurk pays).

Changing actions take the run directory's lock (not while ``crowdprop run`` is
going) and ask to type ``yes`` on the production MTurk (``--yes`` skips it).
"""
from __future__ import annotations

import hashlib
import sys
from datetime import datetime, timedelta, timezone

from ..errors import InputError, StateError

NAME = "hits"
HELP = "list, expire, extend or delete the HITs a campaign published on MTurk"
ORDER = 22

EPILOG = """\
examples:
  crowdprop hits runs/cars list                    (every HIT the run published, with MTurk's status)
  crowdprop hits runs/cars expire                  (take every live HIT off the market now)
  crowdprop hits runs/cars extend 3XYZ... --hours 24
  crowdprop hits runs/cars extend 3XYZ... --assignments 2
  crowdprop hits runs/cars delete                  (every HIT reviewable and settled)

Without HIT ids an action applies to every HIT it can: expire to those still on
the market, delete to those reviewable and settled; extend needs ids. Each action
is recorded in RUN_DIR/hit_actions.jsonl before it is sent.
"""

ACTIONS = ("list", "expire", "extend", "delete")


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help="list | expire | extend | delete")
    p.add_argument("hit_ids", nargs="*", metavar="HIT_ID", help="HITs to act on (default: every one it applies to)")
    p.add_argument("--hours", type=float, help="extend: hours added to the later of now and the HIT's expiry")
    p.add_argument("--assignments", type=int, help="extend: assignments added to each HIT")
    p.add_argument("--json", action="store_true", help="list: print the HITs as JSON")
    add_mturk_options(p)
    p.epilog = EPILOG


def add_mturk_options(p) -> None:
    """--target, --endpoint-url, --profile, --yes: where the run's HITs live (default: what it recorded)."""
    m = p.add_argument_group("MTurk")
    m.add_argument("--target", choices=["sandbox", "production"], help="default: the run's target")
    m.add_argument("--endpoint-url", metavar="URL", help="an MTurk-compatible endpoint (default: the run's)")
    m.add_argument("--profile", metavar="NAME", help="AWS profile of ~/.aws to take credentials from")
    m.add_argument("--yes", action="store_true", help="production: do not ask for a typed confirmation")


# ------------------------------------------------------------------------------ the books
def _rounds_in_progress(run) -> list[int]:
    """Rounds with a journal and no commit yet."""
    from ..crowd.resume import journal_rounds as _journal_rounds

    last = max(run.rounds() or [0])
    return [r for r in _journal_rounds(run) if r > last]


def published_hits(run) -> list[dict]:
    """Every HIT the run directory records as published: ``hit_id``, ``token``, ``round``,
    ``assignments`` (as published, plus extensions), ``done`` (nothing more can arrive for it,
    as the books found in a committed round), ``recorded`` (its assignments in the books)."""
    from ..campaign.ledger import extra_assignments

    out: dict[str, dict] = {}
    hits = run.read_rounds("hits")
    done = run.read_rounds("hits_done")
    asg = run.read_rounds("assignments")
    gone = set(done["hit_id"]) if len(done) else set()
    counts = asg.groupby("hit_id").size().to_dict() if len(asg) else {}
    for h in hits.to_dict("records"):
        out[h["hit_id"]] = {"hit_id": h["hit_id"], "token": h["token"], "round": int(h["round"]),
                            "assignments": int(h["assignments"]), "done": h["hit_id"] in gone,
                            "recorded": int(counts.get(h["hit_id"], 0)), "in_progress": False}
    from ..campaign.roundplan import restore

    for r in _rounds_in_progress(run):
        per_token = {}
        frozen = restore(run, r)
        if frozen is not None:
            per_token = {h.token: h.assignments for h in frozen[0].hits}
        default_n = run.config.crowd.assignments_per_hit
        for rec in run.journal_lines(r, "published"):
            if rec.get("hit_id") and rec["hit_id"] not in out:
                out[rec["hit_id"]] = {"hit_id": rec["hit_id"], "token": rec["token"], "round": r,
                                      "assignments": int(per_token.get(rec["token"], default_n)),
                                      "done": False, "recorded": int(counts.get(rec["hit_id"], 0)),
                                      "in_progress": True}
    for hid, n in extra_assignments(run).items():
        if hid in out:
            out[hid]["assignments"] += n
    return sorted(out.values(), key=lambda h: (h["round"], h["hit_id"]))


# ------------------------------------------------------------------------------ MTurk
def connect_backend(run, *, target=None, endpoint_url=None, profile=None):
    """``(MTurkBackend without pages, Target)`` for the run's recorded MTurk target (or the options)."""
    from ..crowd import factory as bk
    from ..crowd import mturk as _mturk
    from ..crowd.base import CrowdKind
    from ._checks import connect_error, strip_credentials

    kind = bk.crowd_kind(run)
    if kind == CrowdKind.MTURK_LOCAL:
        raise StateError(f"{run.path}: its HITs lived on the local endpoint of the crowdprop process that ran it, "
                         "which stopped with that process; none of them is live")
    if kind != CrowdKind.MTURK:
        raise StateError(f"{run.path}: its crowd is '{kind}'; it publishes no HITs (crowdprop init --crowd mturk)")
    where = bk.resolve_target(run, target=target, endpoint_url=strip_credentials(endpoint_url), profile=profile)
    where.endpoint_url = strip_credentials(where.endpoint_url, quiet=True)
    bk.quiet_botocore()
    try:
        client = _mturk.connect(None if where.target == "local" else where.target, endpoint_url=where.endpoint_url,
                                profile=where.profile, region="us-east-1")
    except Exception as e:
        connect_error(e)
        raise
    cfg = run.config
    section = cfg.mturk if hasattr(cfg, "mturk") else _mturk.mturk_section(cfg, source=str(run.path / "config.json"))
    backend = _mturk.MTurkBackend(client, config=cfg, mturk=section, page=None, target=where.target,
                                  retry_wait_s=0.5, retry_max_wait_s=10.0, retry_attempts=4)
    return backend, where


def _when(t) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(t), tz=timezone.utc)


def hit_rows(run, backend, books: list[dict] | None = None) -> list[dict]:
    """The run's HITs with MTurk's view of each: ``status`` (MTurk's HITStatus, ``Disposed`` when
    MTurk no longer knows it), ``pending``, ``available``, ``completed``, ``max_assignments``,
    ``expiration`` (ISO 8601, UTC), ``live`` (on the market or work accepted and not submitted)."""
    from ..crowd.mturk import _hit_missing

    out = []
    for b in books if books is not None else published_hits(run):
        row = dict(b)
        try:
            h = backend.call("get_hit", HITId=b["hit_id"])["HIT"]
        except Exception as e:  # noqa: BLE001 - only "no such HIT" is expected
            if not _hit_missing(e):
                raise
            row.update(status="Disposed", pending=0, available=0, completed=None, max_assignments=None,
                       expiration=None, live=False)
            out.append(row)
            continue
        exp = _when(h.get("Expiration"))
        pending = int(h.get("NumberOfAssignmentsPending", 0) or 0)
        available = int(h.get("NumberOfAssignmentsAvailable", 0) or 0)
        row.update(status=str(h.get("HITStatus", "?")), pending=pending, available=available,
                   completed=int(h.get("NumberOfAssignmentsCompleted", 0) or 0),
                   max_assignments=int(h.get("MaxAssignments", 0) or 0),
                   reward=str(h.get("Reward", "")), expiration=exp.isoformat(timespec="seconds") if exp else None,
                   live=bool(pending or available))
        row["_expiration"] = exp
        out.append(row)
    return out


def live_count(run, backend) -> tuple[int, int]:
    """``(live, checked)``: HITs of the run still on the market or with work accepted and not
    submitted, among the HITs the books do not hold done."""
    rows = hit_rows(run, backend, [b for b in published_hits(run) if not b["done"]])
    return sum(r["live"] for r in rows), len(rows)


def _table(rows: list[dict]) -> str:
    head = ["HIT", "round", "status", "pending", "available", "completed", "max", "recorded", "expires (UTC)"]
    body = [[r["hit_id"], str(r["round"]), r["status"], str(r["pending"]), str(r["available"]),
             "-" if r["completed"] is None else str(r["completed"]),
             "-" if r["max_assignments"] is None else str(r["max_assignments"]), str(r["recorded"]),
             (r["expiration"] or "-").replace("+00:00", "")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body])


# ------------------------------------------------------------------------------ actions
def extend_token(run, hit_id: str, seq: int, n: int) -> str:
    """UniqueRequestToken of the ``seq``-th assignment extension of ``hit_id`` by ``n``: the same
    for a retried command (MTurk then refuses it as already processed), 64 characters at most."""
    key = f"{run.campaign.get('campaign_id', '')}\x1f{run.nonce}\x1f{hit_id}\x1f{seq}\x1f{n}"
    return "x-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _confirm(where, what: str, *, assume_yes: bool) -> None:
    if where.target != "production" or assume_yes:
        return
    if not sys.stdin.isatty():
        raise StateError("on the production MTurk this needs a typed confirmation on a terminal, or --yes")
    try:
        answer = input(f'{what} on the production MTurk. Type "yes" to go on: ')
    except EOFError:
        answer = ""
    if answer.strip() != "yes":
        raise StateError("not confirmed; nothing was sent")


def _send(run, backend, record: dict, op: str, **kwargs) -> str:
    """Record ``record`` (event send), call ``op``; record the outcome. Returns ``done`` or
    ``already`` (a repeated token MTurk had processed)."""
    from botocore.exceptions import ClientError

    from ..campaign.ledger import record_action
    from ..crowd.mturk import error_code

    rid = hashlib.sha256(f"{record}{datetime.now(timezone.utc).isoformat()}".encode()).hexdigest()[:16]
    record_action(run, {**record, "id": rid, "event": "send"})
    try:
        backend.call(op, **kwargs)
    except ClientError as e:
        code, turk, _, message = error_code(e)
        if turk == "AWS.MechanicalTurk.DuplicateRequest" or "already been processed" in message:
            record_action(run, {"id": rid, "event": "done", "note": "token already processed"})
            return "already"
        record_action(run, {"id": rid, "event": "refused", "code": turk or code, "message": message[:300]})
        raise StateError(f"{record['action']} {record['hit_id']}: MTurk refused: {turk or code}: "
                         f"{' '.join(message.split())[:200]}") from None
    record_action(run, {"id": rid, "event": "done"})
    return "done"


def _pick(rows: list[dict], ids: list[str], ok, what: str) -> list[dict]:
    if not ids:
        return [r for r in rows if ok(r)]
    by_id = {r["hit_id"]: r for r in rows}
    unknown = [h for h in ids if h not in by_id]
    if unknown:
        raise InputError("command line", None, "HIT_ID",
                         f"{unknown[0]} is not a HIT of this run (crowdprop hits RUN_DIR list shows them)")
    return [by_id[h] for h in ids]


def _exposure_cents(run, rows: list[dict], backend) -> int:
    """What the run paid (books, and the round in progress's journal) plus the most its HITs can
    still cost: every slot MTurk holds open, accepted, or submitted and not settled, at the HIT's
    reward and fee (HITs the books hold done cost nothing more)."""
    from ..campaign.ledger import FEES, journal_bonus_cents, journal_cents, spent_cents
    from ..money import cents

    total = spent_cents(run)
    for rnd in _rounds_in_progress(run):
        total += journal_cents(run, rnd) + journal_bonus_cents(run, rnd)
    for r in rows:
        if r["status"] == "Disposed" or r["done"] or not r.get("reward"):
            continue
        reward = cents(r["reward"])
        submitted = len(backend.assignments_of(r["hit_id"], ["Submitted"]))
        slots = r["pending"] + r["available"] + submitted
        total += slots * (reward + FEES.assignment_fee_cents(reward, r["max_assignments"]))
    return total


def _expire(run, backend, rows, ids) -> list[str]:
    now = datetime.now(timezone.utc)
    # not expired yet: on the market, or held by workers (a returned assignment would go back on it)
    chosen = _pick(rows, ids, lambda r: r["status"] != "Disposed" and r.get("_expiration") is not None
                   and r["_expiration"] > now, "expire")
    out = []
    for r in chosen:
        if r["status"] == "Disposed":
            out.append(f"{r['hit_id']}: deleted on MTurk; nothing to expire")
            continue
        _send(run, backend, {"action": "expire", "hit_id": r["hit_id"], "expire_at": now.isoformat()},
              "update_expiration_for_hit", HITId=r["hit_id"], ExpireAt=now)
        if r["in_progress"]:  # the round in progress stops waiting for it once nothing more can arrive
            run.journal_append(r["round"], "expired", {"hit_id": r["hit_id"], "token": r["token"]})
        late = f"; {r['pending']} worker(s) who accepted it may still submit" if r["pending"] else ""
        out.append(f"{r['hit_id']}: expired{late}")
    return out


def _extend(run, backend, rows, ids, *, hours, assignments) -> list[str]:
    from ..campaign.ledger import FEES, actions
    from ..money import cap_cents, cents, fmt

    if not ids:
        raise InputError("command line", None, "HIT_ID", "extend needs the ids of the HITs to extend")
    if (hours is None) == (assignments is None):
        raise InputError("command line", None, "--hours", "extend takes --hours H or --assignments N (one of them)")
    if hours is not None and not (0 < hours <= 24 * 365):
        raise InputError("command line", None, "--hours", f"must be in (0, 8760], got {hours}")
    if assignments is not None and not 1 <= assignments <= 8:
        raise InputError("command line", None, "--assignments", f"must be in [1, 8], got {assignments}")
    chosen = _pick(rows, ids, lambda r: False, "extend")
    for r in chosen:
        if r["status"] == "Disposed":
            raise StateError(f"{r['hit_id']}: deleted on MTurk; it cannot be extended")
    out = []
    if hours is not None:
        now = datetime.now(timezone.utc)
        for r in chosen:
            at = max(now, r["_expiration"] or now) + timedelta(hours=hours)
            _send(run, backend, {"action": "extend", "hit_id": r["hit_id"], "expire_at": at.isoformat()},
                  "update_expiration_for_hit", HITId=r["hit_id"], ExpireAt=at)
            out.append(f"{r['hit_id']}: expires {at.isoformat(timespec='seconds').replace('+00:00', '')} UTC")
        return out
    cap = cap_cents(run.config.campaign.budget_usd)
    for r in chosen:
        if r["max_assignments"] < 10 <= r["max_assignments"] + assignments:
            raise InputError("command line", None, "--assignments",
                             f"{r['hit_id']} has {r['max_assignments']} assignments; MTurk does not extend a HIT of "
                             "fewer than 10 assignments to 10 or more")
    for r in chosen:
        reward = cents(r["reward"])
        cost = assignments * (reward + FEES.assignment_fee_cents(reward, r["max_assignments"] + assignments))
        committed = _exposure_cents(run, rows, backend)
        if committed + cost > cap:
            raise StateError(f"budget: {assignments} more assignment(s) of {r['hit_id']} could cost {fmt(cost)}, and "
                             f"{fmt(committed)} of the {fmt(cap)} cap ([campaign] budget_usd) is spent or committed; "
                             "nothing was sent")
        seq = sum(1 for a in actions(run) if a.get("action") == "extend" and a.get("hit_id") == r["hit_id"]
                  and a.get("assignments") and a.get("event") == "send"
                  and any(b.get("id") == a["id"] and b.get("event") == "done" for b in actions(run)))
        token = extend_token(run, r["hit_id"], seq, assignments)
        how = _send(run, backend, {"action": "extend", "hit_id": r["hit_id"], "assignments": assignments,
                                   "token": token, "reward_cents": reward},
                    "create_additional_assignments_for_hit", HITId=r["hit_id"],
                    NumberOfAdditionalAssignments=assignments, UniqueRequestToken=token)
        if how == "done":  # counted in what the next HIT's check sees
            r["max_assignments"] += assignments
            r["available"] += assignments
        out.append(f"{r['hit_id']}: {assignments} assignment(s) added" if how == "done" else
                   f"{r['hit_id']}: these {assignments} assignment(s) were added before (same request); not again")
    return out


def _delete(run, backend, rows, ids) -> list[str]:
    books = _book_assignments(run)
    chosen = _pick(rows, ids, lambda r: r["status"] in ("Reviewable", "Reviewing"), "delete")
    out = []
    for r in chosen:
        if r["status"] == "Disposed":
            out.append(f"{r['hit_id']}: already deleted")
            continue
        if r["status"] not in ("Reviewable", "Reviewing"):
            raise StateError(f"{r['hit_id']}: MTurk holds it {r['status']}; only a Reviewable HIT (expired or "
                             "complete, no work accepted and not submitted) can be deleted (expire it first)")
        listed = backend.assignments_of(r["hit_id"], ["Submitted", "Approved", "Rejected"])
        unsettled = [a["AssignmentId"] for a in listed if a.get("AssignmentStatus") == "Submitted"]
        missing = [a["AssignmentId"] for a in listed if a["AssignmentId"] not in books]
        if unsettled or missing:
            raise StateError(f"{r['hit_id']}: {len(missing) or len(unsettled)} assignment(s) not yet recorded and "
                             f"settled by the run; run 'crowdprop run {run.path}' first (it records, judges and pays "
                             "them), then delete")
        _send(run, backend, {"action": "delete", "hit_id": r["hit_id"]}, "delete_hit", HITId=r["hit_id"])
        out.append(f"{r['hit_id']}: deleted")
    return out


def _book_assignments(run) -> set[str]:
    asg = run.read_rounds("assignments")
    return set(asg["assignment_id"]) if len(asg) else set()


def run(args) -> int:
    import contextlib
    import json

    from ..campaign.store import RunDir

    rd = RunDir(args.run_dir).require()
    if args.action != "extend" and (args.hours is not None or args.assignments is not None):
        raise InputError("command line", None, "--hours" if args.hours is not None else "--assignments",
                         "only for extend")
    # changing actions hold the lock: never under a running `crowdprop run`
    with (contextlib.nullcontext() if args.action == "list" else rd.lock()):
        backend, where = connect_backend(rd, target=args.target, endpoint_url=args.endpoint_url, profile=args.profile)
        rows = hit_rows(rd, backend)
        if args.action == "list":
            if args.json:
                print(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], indent=2))
            elif not rows:
                print(f"{rd.path}: no HIT published yet")
            else:
                print(_table(rows))
                live = sum(r["live"] for r in rows)
                print(f"{len(rows)} HIT(s) on {where.describe()}, {live} live"
                      + (f"; crowdprop hits {rd.path} expire takes them off the market" if live else ""))
            return 0
        what = {"expire": "Expire HITs", "extend": "Extend HITs (more time or paid assignments)",
                "delete": "Delete HITs"}[args.action]
        _confirm(where, what, assume_yes=args.yes)
        if args.action == "expire":
            lines = _expire(rd, backend, rows, args.hit_ids)
        elif args.action == "extend":
            lines = _extend(rd, backend, rows, args.hit_ids, hours=args.hours, assignments=args.assignments)
        else:
            lines = _delete(rd, backend, rows, args.hit_ids)
    for line in lines or [f"{rd.path}: no HIT to {args.action}"]:
        print(line)
    return 0
