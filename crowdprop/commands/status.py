"""crowdprop status: one screen on a campaign, while it runs or after.

Reads only the run directory (never the crowd), so it is safe next to a running
``crowdprop run``: committed rounds from ``state/``, the round in progress from
``journal/round=k/`` (``questions.parquet`` planned, ``published.jsonl`` HITs
created, ``received.parquet`` assignments received, ``settled.jsonl`` approvals
and rejections, written before they are acted on).

Estimated time to finish
------------------------
``rate`` = masks decided per round over the last (up to) 3 committed rounds;
``rounds_left = ceil(open / rate)``; a round's duration is the median time
between consecutive round commits (:meth:`RunDir.committed_at`; the first round from
the cluster trees' mtime), so pauses between ``crowdprop run`` calls count
once at most. ETA = ``rounds_left x duration`` minus the time the round in
progress has been running (from its journal's oldest file).
"""
from __future__ import annotations

import math
import sys
import time

NAME = "status"
HELP = "one screen on a campaign: round, HITs out and answered, spend, masks decided, time to finish"
ORDER = 25

RATE_WINDOW = 3


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    p.add_argument("--watch", nargs="?", const="10", default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until Ctrl-C")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.epilog = ("examples:\n  crowdprop status runs/cars\n  crowdprop status runs/cars --watch      "
                "(refresh every 10 s; Ctrl-C to leave)\n  crowdprop status runs/cars --watch 2")


# ------------------------------------------------------------------------------ figures
def lock_holder(run) -> str | None:
    """Who holds the run directory's lock (``pid N on HOST``), or None when no live process does.

    Read from ``RUN_DIR/.lock.owner`` without taking the lock (a status next to a starting
    ``crowdprop run`` must not make it fail): the holder writes its pid there and removes it when
    done; a pid that no longer runs on this host left a stale lock (the OS released it)."""
    import os
    import socket

    from ..campaign.store import LOCK_OWNER

    try:
        text = (run.path / LOCK_OWNER).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    parts = text.split()
    if len(parts) < 4 or parts[0] != "pid" or not parts[1].isdigit():
        return None
    if parts[3] != socket.gethostname() or os.name == "nt":
        return text  # another machine (or Windows, where os.kill ends the process): cannot tell, say who
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return text
    return text


def _mtime(path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _decided(run, upto: int | None) -> tuple[int, int]:
    """(masks decided, masks open) after round ``upto`` (None: all committed rounds)."""
    from ..campaign.loop import labels_for, replay_decisions
    from ..policy.controller import initial_status, mask_status

    forest = run.forest
    status = initial_status(forest)
    decisions = run.read_rounds("decisions", upto=upto)
    replay_decisions(run, status, decisions)
    answers = run.read_rounds("answers", upto=upto)
    final = mask_status(forest, status, labels_for(run, answers))
    return int((final >= 0).sum()), int((final < 0).sum())


def _journal_rounds(run) -> list[int]:
    root = run.path / "journal"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("round="):
            try:
                out.append(int(p.name.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(out)


def in_progress(run, r: int) -> dict:
    """What the journal of round ``r`` says: HITs planned, published, answered; settlements.

    Returns
    -------
    dict
        ``round``; ``hits_planned`` (distinct tokens in the journal's questions),
        ``questions``; ``hits_published`` (tokens with a HIT id in published.jsonl);
        ``assignments_expected`` (published HITs x assignments per HIT);
        ``assignments_received`` and ``hits_answered`` (HITs with every assignment
        received) from received.parquet; ``settled``, ``approved``, ``rejected``
        and ``usd_settled`` (reward + fee of the approvals, MTurk's own included)
        from settled.jsonl;
        ``started`` (epoch seconds of the journal's oldest file, or None).
    """
    from ..campaign.ledger import final_state, journal_bonus_cents, journal_settlements, settled_record_cents
    from ..campaign.roundplan import restore

    cfg = run.config
    d = run.journal_dir(r)
    q = run.journal_read(r, "questions")
    published = {x["token"]: x["hit_id"] for x in run.journal_lines(r, "published") if "hit_id" in x}
    recv = run.journal_read(r, "received")
    settled = journal_settlements(run, r)
    per_hit = cfg.crowd.assignments_per_hit
    frozen = restore(run, r)
    if frozen is not None and frozen[0].hits:  # the assignments each HIT was published with
        per_token = {h.token: h.assignments for h in frozen[0].hits}
        expected = sum(per_token.get(t, per_hit) for t in published)
    else:
        per_token, expected = {}, len(published) * per_hit
    out = {"round": r, "hits_planned": int(q["token"].nunique()) if q is not None and len(q) else 0,
           "questions": int(len(q)) if q is not None else 0, "hits_published": len(published),
           "assignments_expected": expected,
           "assignments_received": int(recv["assignment_id"].nunique()) if recv is not None and len(recv) else 0,
           "hits_answered": 0}
    if recv is not None and len(recv):
        mine = recv[recv["token"].isin(set(published))] if "token" in recv else recv
        counts = mine.drop_duplicates("assignment_id").groupby("token" if "token" in mine else "hit_id").size()
        out["hits_answered"] = int(sum(n >= per_token.get(t, per_hit) for t, n in counts.items()))
    approved = [x for x in settled.values() if final_state(x) == "Approved"]
    out["settled"] = len(settled)
    out["approved"] = len(approved)
    out["rejected"] = len(settled) - len(approved)
    out["cents_settled"] = int(sum(settled_record_cents(x) for x in approved)) + journal_bonus_cents(run, r)
    out["usd_settled"] = out["cents_settled"] / 100
    times = [t for t in (_mtime(p) for p in d.iterdir()) if t is not None] if d.is_dir() else []
    out["started"] = min(times) if times else None
    return out


def collect_status(run, *, now: float | None = None) -> dict:
    """Every figure of the status screen, from the run directory alone.

    Parameters
    ----------
    run : RunDir
    now : float, optional
        Epoch seconds taken as the present (default: ``time.time()``).

    Returns
    -------
    dict
        ``campaign_id``, ``crowd``, ``masks``; ``last_round`` (last committed, 0:
        none) and ``max_rounds``; ``in_progress`` (:func:`in_progress` of the
        journal round after the last committed one, or None); ``hits``,
        ``assignments``, ``questions`` committed; ``usd_committed``, ``usd``
        (committed plus approvals settled in the round in progress) and
        ``budget_usd``; ``decided``, ``open``; ``rate_per_round``,
        ``round_seconds``, ``rounds_left``, ``eta_seconds`` (None when unknown);
        ``finished`` (no open mask left, or the round limit or budget reached).
    """
    import numpy as np

    from ..campaign.ledger import spent_cents
    from ..campaign.loop import STOP_REASONS
    from ..money import cap_cents

    now = time.time() if now is None else float(now)
    cfg = run.config
    rounds = run.rounds()
    last = rounds[-1] if rounds else 0
    spend = run.read_rounds("spend")
    hits = run.read_rounds("hits")
    ass = run.read_rounds("assignments")
    ans = run.read_rounds("answers")
    out = {"run_dir": str(run.path), "campaign_id": run.campaign.get("campaign_id"),
           "crowd": (run.campaign.get("crowd") or {}).get("kind", "?"), "masks": int(run.n_masks),
           "last_round": last, "max_rounds": int(cfg.campaign.max_rounds),
           "hits": int(len(hits)), "assignments": int(len(ass)),
           "questions": int((ans["used"].astype(bool) & ~ans["is_gold"].astype(bool)).sum()) if len(ans) else 0,
           "cents_committed": spent_cents(run, spend=spend),
           "budget_usd": float(cfg.campaign.budget_usd)}
    out["usd_committed"] = out["cents_committed"] / 100
    pending = [r for r in _journal_rounds(run) if r > last]
    out["in_progress"] = in_progress(run, pending[0]) if pending else None
    out["held_by"] = lock_holder(run)
    out["cents"] = out["cents_committed"] + (out["in_progress"]["cents_settled"] if out["in_progress"] else 0)
    out["usd"] = out["cents"] / 100
    if run.has_forest:
        decided, open_ = _decided(run, None)
    else:
        decided, open_ = 0, out["masks"]
    out["decided"], out["open"] = decided, open_
    # rate of masks decided per round over the last few rounds
    rate = None
    if rounds:
        base_round = rounds[-RATE_WINDOW - 1] if len(rounds) > RATE_WINDOW else 0
        base = _decided(run, base_round)[0] if base_round else 0
        n = len([r for r in rounds if r > base_round])
        rate = (decided - base) / n if n else None
    # round durations from commit times
    commits = [run.committed_at(r) for r in rounds]
    start = _mtime(run.path / "trees" / "nodes.parquet")
    stamps = [t for t in [start] + commits if t is not None]
    gaps = np.diff(stamps) if len(stamps) >= 2 else np.zeros(0)
    gaps = gaps[gaps >= 0]
    round_s = float(np.median(gaps)) if len(gaps) else None
    out["rate_per_round"] = rate
    out["round_seconds"] = round_s
    stopped = run.campaign.get("stopped") or {}
    nothing_left = stopped.get("reason") in STOP_REASONS and stopped.get("after_round") == last
    finished = (open_ == 0 or nothing_left or last >= cfg.campaign.max_rounds
                or out["cents"] >= cap_cents(cfg.campaign.budget_usd))
    out["finished"] = bool(finished and out["in_progress"] is None)
    out["stopped"] = stopped.get("reason") if nothing_left else None
    if open_ == 0:
        out["rounds_left"], out["eta_seconds"] = 0, 0.0
    elif rate and rate > 0 and round_s is not None:
        left = min(int(math.ceil(open_ / rate)), max(cfg.campaign.max_rounds - last, 0))
        elapsed = now - out["in_progress"]["started"] if out["in_progress"] and out["in_progress"]["started"] else 0.0
        out["rounds_left"] = left
        out["eta_seconds"] = max(0.0, left * round_s - max(elapsed, 0.0))
    else:
        out["rounds_left"], out["eta_seconds"] = None, None
    return out


# ------------------------------------------------------------------------------ screen
def _duration(s: float | None) -> str:
    if s is None:
        return "unknown"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def format_status(st: dict, *, now: float | None = None) -> str:
    """The status screen as plain text (a few lines, no color)."""
    now = time.time() if now is None else now
    lines = [f"campaign {st['campaign_id']} ({st['crowd']})  {st['run_dir']}"]
    ip = st["in_progress"]
    rnd = f"round: {st['last_round']} committed (limit {st['max_rounds']})"
    if ip and st.get("held_by") is None:
        rnd += (f"; round {ip['round']} stopped part-way: no crowdprop process holds the run "
                f"(crowdprop run {st['run_dir']} continues it)")
    elif ip:
        rnd += f"; round {ip['round']} in progress"
        if ip["started"]:
            rnd += f" for {_duration(now - ip['started'])}"
    elif st["finished"]:
        rnd += "; finished"
    lines.append(rnd)
    lines.append(f"HITs: {st['hits']} committed, {st['assignments']} assignments, {st['questions']} questions answered")
    if ip:
        lines.append(f"  round {ip['round']}: {ip['hits_published']} of {ip['hits_planned']} HITs out "
                     f"({ip['questions']} questions), {ip['hits_answered']} answered; assignments "
                     f"{ip['assignments_received']} of {ip['assignments_expected']} received, {ip['settled']} settled "
                     f"({ip['approved']} approved, {ip['rejected']} rejected)")
    pct = 100.0 * st["usd"] / st["budget_usd"] if st["budget_usd"] > 0 else 0.0
    lines.append(f"spend: ${st['usd']:.2f} of ${st['budget_usd']:.2f} budget ({pct:.1f} %)"
                 + (f"; ${ip['usd_settled']:.2f} of it in round {ip['round']}" if ip and ip["usd_settled"] else ""))
    n = max(st["masks"], 1)
    lines.append(f"masks: {st['decided']} decided, {st['open']} open of {st['masks']} "
                 f"({100.0 * st['decided'] / n:.1f} % decided)")
    if st["open"] == 0:
        lines.append("to finish: nothing left open")
    elif st.get("stopped") and st["finished"]:
        lines.append(f"to finish: nothing more to ask ({st['stopped']}); {st['open']} masks stay open")
    elif st["eta_seconds"] is None:
        lines.append("to finish: unknown (needs a committed round)")
    else:
        lines.append(f"to finish: about {st['rounds_left']} more round(s), ~{_duration(st['eta_seconds'])} "
                     f"({st['rate_per_round']:.1f} masks decided per round, {_duration(st['round_seconds'])} per round)")
    return "\n".join(lines)


def run(args) -> int:
    import json

    from ..campaign.store import RunDir
    from ..errors import InputError
    from ._checks import check_seconds

    if args.watch is not None:
        try:
            args.watch = float(args.watch)
        except ValueError:
            if args.run_dir is not None:  # `--watch RUN_DIR2 RUN_DIR`
                raise InputError("command line", None, "--watch", f"expected seconds, got {args.watch!r}") from None
            args.run_dir, args.watch = args.watch, 10.0  # `status --watch RUN_DIR`
    if args.run_dir is None:
        raise InputError("command line", None, "RUN_DIR", "the run directory is required (crowdprop status RUN_DIR)")
    from .video import hand_off, is_video_run_dir

    if is_video_run_dir(args.run_dir):  # crowdprop video's run directory: its own status
        if args.watch is not None:
            raise InputError("command line", None, "--watch", "not for video run directories "
                                                              "(crowdprop video status RUN_DIR)")
        return hand_off("status", args.run_dir, json=args.json)
    check_seconds(args.watch, "--watch")
    tty = sys.stdout.isatty()
    try:
        while True:
            rd = RunDir(args.run_dir).require()  # fresh each time: nothing cached between screens
            st = collect_status(rd)
            text = json.dumps(st, indent=2, default=float) if args.json else format_status(st)
            if args.watch is not None and tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if args.watch is None:
                return 0
            if not tty:
                print(flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
