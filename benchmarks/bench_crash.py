"""Kill the controller with SIGKILL at random moments; nothing may be lost, paid twice or overspent.

    python benchmarks/bench_crash.py                 # 50 kills (10 campaigns x 5 kills) + the scenarios
    python benchmarks/bench_crash.py --kills 10 --per-campaign 5 --seed 1
    python benchmarks/bench_crash.py --kills 0       # the scenarios only

The local MTurk endpoint runs as its own process (``crowdprop mturk-local
--run-dir RUN --port 0``), so it outlives every controller it serves. A campaign
is made with ``crowdprop init --crowd mturk`` from the shipped sample and driven
with ``crowdprop run RUN --endpoint-url URL`` through a wrapper (this file with
``--child``) that sends itself SIGKILL at the k-th call of one function:

=========================== ==========================================================
moment                      where the process dies
=========================== ==========================================================
``publish.after``           CreateHIT returned, the HIT id not recorded yet
``publish.before``          the token journaled, CreateHIT not sent
``poll.after``              assignments listed, not journaled
``settle.after``            approved / rejected on MTurk, not recorded in a round yet
``journal_append.after``    right after a journal line was fsynced
``write_parquet.mid``       half of a Parquet file written (temp file cut in two)
``atomic_path.rename``      a complete temp file, just before its rename
``commit.rename``           a round folder complete, just before its rename
``commit_round.after``      a round committed
``settle.before``           a decision journaled, not sent to MTurk yet
=========================== ==========================================================

Scenarios (:data:`SCENARIOS`) add what MTurk and requesters do between two runs:
late submissions (workers who accepted before a HIT expired submit after its round
closed), MTurk approving work on its own while the controller is down, the budget
and the reward lowered in ``config.json`` mid-round, and a copy of the run
directory run on the same account next to the original.

After the last kill of a campaign the controller runs to the end, and the
endpoint's books (``GET URL/_ledger`` and the MTurk API) are checked against the
run directory and against an uninterrupted run with the same seed:
duplicate HITs, answers lost or counted twice, assignments paid twice, spend
over the budget, answers recorded against another mask than the one the worker
was shown, dollars MTurk charged that the run directory does not record (after
every Submitted assignment would have been approved on its own), and the final
accepted set (:func:`crowdprop.campaign.export.final_status`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HOOKS = {
    # name: (module, class or None, attribute, when)
    "publish.after": ("crowdprop.crowd.mturk", "MTurkBackend", "publish", "after"),
    "publish.before": ("crowdprop.crowd.mturk", "MTurkBackend", "publish", "before"),
    "poll.after": ("crowdprop.crowd.mturk", "MTurkBackend", "poll", "after"),
    "settle.after": ("crowdprop.crowd.mturk", "MTurkBackend", "settle", "after"),
    "journal_append.after": ("crowdprop.campaign.store", "RunDir", "journal_append", "after"),
    "write_parquet.mid": ("crowdprop.io", None, "pq.write_table", "mid"),
    "atomic_path.rename": ("crowdprop.io", None, "os.replace", "before"),
    "commit.rename": ("crowdprop.campaign.store", None, "os.replace", "before"),
    "commit_round.after": ("crowdprop.campaign.store", "RunDir", "commit_round", "after"),
    "settle.before": ("crowdprop.crowd.mturk", "MTurkBackend", "settle", "before"),
}
SPECIFIC = [("publish.after", 3), ("settle.after", 2), ("write_parquet.mid", 6)]
"""The moments every crash test includes: between CreateHIT and its record, between an
approval and its record, in the middle of a Parquet write."""
ENV = "CROWDPROP_CRASH_AT"


# ----------------------------------------------------------------------------- the child process
class _Shim:
    """A module stand-in whose one attribute is wrapped (``crowdprop.io.os``, ``crowdprop.io.pq``)."""

    def __init__(self, real, name, fn):
        self._real, self._name, self._fn = real, name, fn

    def __getattr__(self, attr):
        return self._fn if attr == self._name else getattr(self._real, attr)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: dict) -> None:
    """Wrap the hook functions: ``{"hook": name, "k": k}`` dies at the k-th call of one;
    ``{"count": path}`` counts the calls of every hook and writes them to ``path`` at exit."""
    import atexit
    import importlib

    counts = {name: 0 for name in HOOKS}
    names = [spec["hook"]] if "hook" in spec else list(HOOKS)
    for name in names:
        modname, cls, attr, when = HOOKS[name]
        mod = importlib.import_module(modname)

        def make(real, name=name, when=when):
            def wrapper(*a, **kw):
                counts[name] += 1
                hit = "k" in spec and counts[name] == spec["k"]
                if hit and when == "before":
                    _die()
                out = real(*a, **kw)
                if hit and when == "mid":  # pq.write_table(table, tmp): cut the file in two
                    path = Path(a[1])
                    with open(path, "r+b") as f:
                        f.truncate(max(1, path.stat().st_size // 2))
                        f.flush()
                        os.fsync(f.fileno())
                if hit:
                    _die()
                return out
            return wrapper

        if cls is not None:
            owner = getattr(mod, cls)
            setattr(owner, attr, make(getattr(owner, attr)))
        else:
            sub, fn = attr.split(".")
            real_mod = getattr(mod, sub)
            setattr(mod, sub, _Shim(real_mod, fn, make(getattr(real_mod, fn))))
    if "count" in spec:
        atexit.register(lambda: Path(spec["count"]).write_text(json.dumps(counts)))


def child_main(argv: list[str]) -> int:
    spec = json.loads(os.environ.get(ENV, "{}"))
    if spec:
        install(spec)
    from crowdprop.cli import main

    return main(argv)


# ----------------------------------------------------------------------------- the endpoint
class Endpoint:
    """``crowdprop mturk-local --run-dir RUN --port 0`` in its own process."""

    def __init__(self, run_dir: Path, log_dir: Path, *, extra: list[str] | None = None):
        self.log = log_dir / f"endpoint-{run_dir.name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "crowdprop", "mturk-local", "--run-dir", str(run_dir),
                                      "--port", "0", *(extra or [])],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        self.url = None
        while self.url is None:
            text = self.log.read_text() if self.log.exists() else ""
            for line in text.splitlines():
                if line.startswith("local MTurk endpoint: "):
                    self.url = line.split(": ", 1)[1].strip()
            if self.proc.poll() is not None:
                raise RuntimeError(f"mturk-local exited: {text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mturk-local did not start: {text}")
            time.sleep(0.05)

    def ledger(self) -> dict:
        with urllib.request.urlopen(self.url + "/_ledger", timeout=30) as r:
            return json.loads(r.read())

    def assignments(self, *, pages: bool = False):
        """Every HIT and every assignment (all public states) through the MTurk API; with
        ``pages``, also ``{HIT id: {question id: mask id}}`` as each HIT's worker page shows them."""
        import boto3
        from botocore.config import Config

        c = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1").client(
            "mturk", endpoint_url=self.url,  # retries: the endpoint may be injecting faults
            config=Config(retries={"total_max_attempts": 30, "mode": "standard"}))
        hits = [h for p in c.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": 100})
                for h in p["HITs"]]
        asg = []
        for h in hits:
            for p in c.get_paginator("list_assignments_for_hit").paginate(
                    HITId=h["HITId"], AssignmentStatuses=["Submitted", "Approved", "Rejected"],
                    PaginationConfig={"PageSize": 100}):
                asg += p["Assignments"]
        if not pages:
            return hits, asg
        from crowdprop.mturk_local import page_questions

        shown = {}
        for h in hits:
            q = c.get_hit(HITId=h["HITId"])["HIT"]["Question"]
            html = q.split("<HTMLContent><![CDATA[", 1)[1].rsplit("]]></HTMLContent>", 1)[0]
            shown[h["HITId"]] = {x.question_id: x.mask_id for x in page_questions(html)}
        return hits, asg, shown

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------- campaigns
def sample_run(dest: Path, *, budget_usd: float | None = None) -> Path:
    """``crowdprop init --crowd mturk`` of the shipped sample (k_pa = 0)."""
    from crowdprop.commands.replay import sample_paths

    preds, gt, config = sample_paths()
    cfg_path = Path(config)
    if budget_usd is not None:
        text = Path(config).read_text() + f"\n[campaign]\nbudget_usd = {budget_usd}\n"
        cfg_path = dest.parent / f"{dest.name}.toml"
        cfg_path.write_text(text)
    subprocess.run([sys.executable, "-m", "crowdprop", "init", str(dest), "--predictions", str(preds), "--gt", str(gt),
                    "--config", str(cfg_path), "--crowd", "mturk"], check=True, capture_output=True, text=True)
    return dest


def controller(run_dir: Path, url: str, spec: dict | None, *, timeout: float = 600) -> subprocess.CompletedProcess:
    """``crowdprop run RUN --endpoint-url URL`` through the crash wrapper."""
    env = dict(os.environ)
    env[ENV] = json.dumps(spec or {})
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "run", str(run_dir),
                           "--endpoint-url", url], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Outcome:
    kills: int = 0
    missed: list = field(default_factory=list)
    moments: list = field(default_factory=list)
    duplicates: int = 0
    lost: int = 0
    double_counted: int = 0
    double_approved: int = 0
    misattributed: int = 0
    unrecorded_usd: float = 0.0
    overspend_usd: float = 0.0
    books_differ: int = 0
    unsettled: int = 0
    identical: bool = False
    temp_files: int = 0
    wall_s: float = 0.0
    late: int = 0
    """Assignments recorded in a later round than their HIT's (submitted after their round closed)."""
    by_mturk: int = 0
    """Assignments MTurk approved on its own (recorded as it holds them)."""
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.duplicates == self.lost == self.double_counted == self.double_approved == self.books_differ
                == self.unsettled == self.misattributed == 0 and self.overspend_usd <= 0
                and self.unrecorded_usd <= 0 and self.identical)


def _spend_cents(spend) -> dict[str, int]:
    out: dict[str, int] = {}
    if len(spend):
        for aid, c in zip(spend["assignment_id"], spend["cents"]):
            out[aid] = out.get(aid, 0) + int(c)
    return out


def check(run_dir, ep: Endpoint, reference: np.ndarray | None, out: Outcome, *,
          allowed_cents: int | None = None) -> Outcome:
    """The endpoint's books against the run directory, or against several run directories of one
    account (a copy and its original): every HIT on the endpoint belongs to exactly one of them,
    every assignment is recorded once with its answers against the masks its worker was shown,
    and every cent charged is recorded. ``allowed_cents``: the spend the cap allowed (default:
    the run directory's budget cap)."""
    from crowdprop.campaign.export import final_status
    from crowdprop.campaign.store import RunDir
    from crowdprop.crowd.mturk import parse_answers
    from crowdprop.money import cap_cents

    dirs = [Path(d) for d in (run_dir if isinstance(run_dir, (list, tuple)) else [run_dir])]
    rds = [RunDir(d) for d in dirs]
    led = ep.ledger()
    hits_api, asg_api, shown = ep.assignments(pages=True)
    hits = [rd.read_rounds("hits") for rd in rds]
    asg = [rd.read_rounds("assignments") for rd in rds]
    ans = [rd.read_rounds("answers") for rd in rds]
    spend = [_spend_cents(rd.read_rounds("spend")) for rd in rds]
    # one HIT per token, and every HIT on the endpoint is one exactly one run directory knows
    owners: dict[str, int] = {}
    for h in hits:
        for hid in h["hit_id"] if len(h) else ():
            owners[hid] = owners.get(hid, 0) + 1
    dup = len(led["tokens_with_several_hits"]) + max(0, led["hits_created"] - len(owners))
    dup += sum(1 for h in hits_api if owners.get(h["HITId"], 0) != 1)
    dup += sum(int(h["token"].duplicated().sum()) for h in hits if len(h))
    out.duplicates += dup
    if dup:
        out.problems.append(f"duplicate HITs: {led['tokens_with_several_hits']}, "
                            f"{sum(1 for h in hits_api if owners.get(h['HITId'], 0) != 1)} HITs not owned once")
    # every submitted assignment exactly once, its answers exactly once, about the masks shown
    where: dict[str, int] = {}
    for k, a in enumerate(asg):
        out.double_counted += int(a["assignment_id"].duplicated().sum()) if len(a) else 0
        for aid in a["assignment_id"] if len(a) else ():
            where[aid] = where.get(aid, 0) + 1
    for an in ans:
        out.double_counted += int(an.duplicated(["assignment_id", "question_id"]).sum()) if len(an) else 0
    by_asg = {}
    for rd, an in zip(rds, ans):
        if len(an) == 0:
            continue
        mask_id = rd.masks["mask_id"].to_numpy()
        for aid, g in an.groupby("assignment_id"):
            by_asg[aid] = g
            for hid, qid, row in zip(g["hit_id"], g["question_id"], g["mask_row"]):
                if shown.get(hid, {}).get(qid) != int(mask_id[row]):
                    out.misattributed += 1
    if out.misattributed:
        out.problems.append(f"{out.misattributed} answers recorded against a mask the worker was not shown")
    for a in asg_api:
        aid = a["AssignmentId"]
        n = where.get(aid, 0)
        if n != 1:
            out.lost += n == 0
            out.double_counted += max(0, n - 1)
            out.problems.append(f"assignment {aid} ({a['AssignmentStatus']}) is in {n} run directories")
            continue
        got, _ = parse_answers(a.get("Answer") or "", None, max_bytes=1 << 24)
        g = by_asg.get(aid)
        mine = {} if g is None else {q: bool(v) for q, v in zip(g["question_id"], g["label"])}
        if mine != got:
            out.lost += 1
            out.problems.append(f"assignment {aid}: answers differ from the endpoint's")
    out.unsettled += sum(a["AssignmentStatus"] == "Submitted" for a in asg_api)
    for a in asg:
        if len(a) and "hit_round" in a:
            out.late += int((a["round"] > a["hit_round"]).sum())
            out.by_mturk += int((a["settled_by"] == "mturk").sum())
    api_ids = {a["AssignmentId"] for a in asg_api}
    out.double_counted += len(set(where) - api_ids)  # answers the endpoint never had
    # paid once, and every cent charged recorded
    out.double_approved += len(led["approved_more_than_once"]) + sum(v > 1 for v in led["bonus_counts"].values())
    approved = sum(int(np.sum(a["approved"].astype(bool))) for a in asg if len(a))
    if led["approvals"] != approved:
        out.books_differ += 1
        out.problems.append(f"endpoint approvals {led['approvals']} != run directories' {approved}")
    charged: dict[str, int] = {}
    for e in led["entries"]:
        charged[e["assignment_id"]] = charged.get(e["assignment_id"], 0) + int(e["cents"])
    recorded: dict[str, int] = {}
    for sp in spend:
        for aid, c in sp.items():
            recorded[aid] = recorded.get(aid, 0) + c
    unrecorded = sum(max(0, c - recorded.get(aid, 0)) for aid, c in charged.items())
    out.unrecorded_usd += unrecorded / 100
    if unrecorded or sum(recorded.values()) != sum(charged.values()):
        out.books_differ += 1
        out.problems.append(f"endpoint charged ${sum(charged.values()) / 100:.2f}, run directories record "
                            f"${sum(recorded.values()) / 100:.2f} (${unrecorded / 100:.2f} never recorded)")
    for rd, sp in zip(rds, spend):
        cap = allowed_cents if allowed_cents is not None and len(rds) == 1 else cap_cents(rd.config.campaign.budget_usd)
        out.overspend_usd = max(out.overspend_usd, (sum(sp.values()) - cap) / 100, 0.0)
    out.temp_files += sum(1 for d in dirs for p in d.rglob("*") if p.name.endswith(".tmp"))
    if reference is not None:
        status = final_status(rds[0])
        out.identical = bool(np.array_equal(status, reference))
        if not out.identical:
            out.problems.append(f"final status differs from the uninterrupted run in {(status != reference).sum()} masks")
    return out


def reference_run(base: Path, work: Path) -> tuple[np.ndarray, dict, float]:
    """An uninterrupted campaign from a copy of ``base``: (final status, calls per hook, wall s)."""
    from crowdprop.campaign.export import final_status
    from crowdprop.campaign.store import RunDir

    run_dir = work / "reference"
    shutil.copytree(base, run_dir)
    ep = Endpoint(run_dir, work)
    try:
        t0 = time.perf_counter()
        counts_path = work / "counts.json"
        p = controller(run_dir, ep.url, {"count": str(counts_path)})
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"reference run failed: {p.stderr[-2000:]}")
        out = check(run_dir, ep, None, Outcome())
        if not (out.duplicates == out.lost == out.double_counted == out.double_approved == out.books_differ == 0):
            raise RuntimeError(f"reference run's books do not balance: {out.problems}")
    finally:
        ep.stop()
    return final_status(RunDir(run_dir)), json.loads(counts_path.read_text()), wall


def crash_campaign(base: Path, work: Path, name: str, moments, reference: np.ndarray) -> Outcome:
    """Run a copy of ``base`` killing the controller at each of ``moments`` in turn, then run it to
    the end and check the books. ``moments``: (hook, k) pairs (die at the k-th call of hook in
    that process), or callables of the number of committed rounds returning one."""
    from crowdprop.campaign.store import RunDir

    run_dir = work / name
    shutil.copytree(base, run_dir)
    out = Outcome()
    ep = Endpoint(run_dir, work)
    t0 = time.perf_counter()
    try:
        for m in moments:
            hook, k = m(len(RunDir(run_dir).rounds())) if callable(m) else m
            if not kill(run_dir, ep.url, hook, k, out):
                return out
        p = controller(run_dir, ep.url, None)
        if p.returncode != 0:
            out.problems.append(f"final run failed (rc {p.returncode}): {p.stderr[-1500:]}")
            return out
        if "stopped: no candidates left" not in p.stdout:
            out.problems.append(f"final run did not finish the campaign: {p.stdout[-500:]}")
        out.wall_s = time.perf_counter() - t0
        check(run_dir, ep, reference, out)
    finally:
        ep.stop()
    return out


def kill(run_dir: Path, url: str, hook: str, k: int, out: Outcome) -> bool:
    """Run the controller until it dies at the k-th call of ``hook``; False when it failed otherwise."""
    p = controller(run_dir, url, {"hook": hook, "k": int(k)})
    if p.returncode == -signal.SIGKILL:
        out.kills += 1
        out.moments.append(f"{hook}#{k}")
    elif p.returncode == 0:
        out.missed.append(f"{hook}#{k}")  # the campaign ended before the k-th call
    else:
        out.problems.append(f"controller failed (rc {p.returncode}) after {hook}#{k}: {p.stderr[-1500:]}")
        return False
    return True


def run_to_end(run_dir: Path, url: str, out: Outcome, *, tries: int = 8) -> bool:
    """Run the controller until the campaign ends (a run may stop early, waiting for late work)."""
    for _ in range(tries):
        p = controller(run_dir, url, None)
        if p.returncode != 0:
            out.problems.append(f"run failed (rc {p.returncode}): {p.stderr[-1500:]}")
            return False
        if "stopped: no candidates left" in p.stdout or "stopped: budget reached" in p.stdout:
            return True
        time.sleep(1.0)
    out.problems.append(f"the campaign did not end: {p.stdout[-300:]}")
    return False


def edit_config(run_dir: Path, **sections) -> None:
    """Change config.json between two runs, as a requester editing it would."""
    cfg = json.loads((run_dir / "config.json").read_text())
    for name, values in sections.items():
        cfg[name].update(values)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------- scenarios
def _late(run_dir: Path, ep: Endpoint, out: Outcome, work: Path) -> None:
    for hook, k in (("poll.after", 3), ("settle.after", 4), ("commit_round.after", 1)):
        if not kill(run_dir, ep.url, hook, k, out):
            return
    if run_to_end(run_dir, ep.url, out):
        check(run_dir, ep, None, out)


def _auto(run_dir: Path, ep: Endpoint, out: Outcome, work: Path) -> None:
    for hook, k in (("settle.before", 2), ("poll.after", 2), ("settle.before", 5)):
        if not kill(run_dir, ep.url, hook, k, out):
            return
        time.sleep(3.0)  # the controller is down longer than MTurk waits before approving on its own
    if run_to_end(run_dir, ep.url, out):
        check(run_dir, ep, None, out)


def _lowered(what: str):
    def scenario(run_dir: Path, ep: Endpoint, out: Outcome, work: Path) -> None:
        from crowdprop.money import cap_cents

        if not kill(run_dir, ep.url, "publish.after", 3, out):
            return
        before = {h["HITId"] for h in ep.assignments()[0]}
        if what == "budget":
            edit_config(run_dir, campaign={"budget_usd": 0.5})
        else:
            edit_config(run_dir, crowd={"reward_usd": 0.10})
        if not run_to_end(run_dir, ep.url, out):
            return
        # the cap allowed what the HITs published before it was lowered cost, and the new cap
        old = sum(int(e["cents"]) for e in ep.ledger()["entries"] if e["hit_id"] in before)
        check(run_dir, ep, None, out, allowed_cents=max(old, cap_cents(0.5 if what == "budget" else 1e6)))
    return scenario


def _copied(run_dir: Path, ep: Endpoint, out: Outcome, work: Path) -> None:
    if not kill(run_dir, ep.url, "poll.after", 1, out):  # round 1's HITs live
        return
    copy = work / f"{run_dir.name}-copy"
    shutil.copytree(run_dir, copy)
    if run_to_end(copy, ep.url, out) and run_to_end(run_dir, ep.url, out):
        check([run_dir, copy], ep, None, out)


SCENARIOS = {
    "late submissions (30 % of workers submit 3 s after accepting; rounds time out after 2 s)":
        (["--late", "0.3", "--late-delay", "3"], {"crowd": {"round_timeout_s": 2.0, "poll_interval_s": 0.2}}, _late),
    "MTurk approves work on its own while the controller is down (after 2 s)":
        (["--auto-approve-after", "2"], {}, _auto),
    "budget lowered to $0.50 mid-round (HITs worth $0.72 live)": ([], {}, _lowered("budget")),
    "reward lowered to $0.10 mid-round": ([], {}, _lowered("reward")),
    "run directory copied mid-round, both run on one account": ([], {}, _copied),
}
"""name -> (mturk-local flags, config.json changes before the first run, the kills and changes)."""


def scenario_suite(base: Path, work: Path, log=print) -> list[tuple[str, Outcome]]:
    """Each of :data:`SCENARIOS` on its own copy of ``base`` and its own endpoint process."""
    out = []
    for i, (name, (flags, config, steps)) in enumerate(SCENARIOS.items()):
        run_dir = work / f"scenario{i}"
        shutil.copytree(base, run_dir)
        if config:
            edit_config(run_dir, **config)
        o = Outcome(identical=True)
        ep = Endpoint(run_dir, work, extra=flags)
        t0 = time.perf_counter()
        try:
            steps(run_dir, ep, o, work)
        finally:
            ep.stop()
        o.wall_s = time.perf_counter() - t0
        log(f"scenario {name}: {o.kills} kills {o.moments}; ok={o.ok} {o.wall_s:.1f} s {o.problems[:3]}")
        out.append((name, o))
    return out


def random_moment(rng: np.random.Generator, counts: dict, rounds: int):
    """A chooser of a random (hook, k): k within the calls left to a process that starts after
    ``done`` committed rounds (the uninterrupted run's calls, ``counts``, spread evenly over its
    ``rounds``), so that most moments are reached."""
    names = [h for h in HOOKS if counts.get(h, 0) > 0]

    def choose(done: int) -> tuple[str, int]:
        h = names[int(rng.integers(len(names)))]
        left = counts[h] * max(rounds - done, 1) / rounds
        return h, int(rng.integers(1, max(1, int(left * 0.8)) + 1))

    return choose


def crash_suite(*, kills: int = 5, per_campaign: int = 5, seed: int = 0, work: Path | None = None,
                log=print, with_scenarios: bool = False) -> dict:
    """Run ``kills`` SIGKILLs over campaigns of ``per_campaign`` kills each; the first campaign
    starts with :data:`SPECIFIC`; then, with ``with_scenarios``, :data:`SCENARIOS`. Returns the
    totals, the per-campaign outcomes and the scenarios' outcomes."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="crowdprop-crash-")) if own else Path(work)
    try:
        base = sample_run(work / "base")
        reference, counts, ref_wall = reference_run(base, work)
        rounds = counts["commit_round.after"]
        log(f"uninterrupted run: {ref_wall:.1f} s; calls per hook: {counts}")
        rng = np.random.default_rng(seed)
        outcomes = []
        done = 0
        i = 0
        while done < kills:
            n = min(per_campaign, kills - done)
            moments = list(SPECIFIC[:n]) if i == 0 else []
            moments += [random_moment(rng, counts, rounds) for _ in range(n - len(moments))]
            o = crash_campaign(base, work, f"crash{i:02d}", moments, reference)
            outcomes.append(o)
            log(f"campaign {i}: {o.kills} kills {o.moments} missed {o.missed}; ok={o.ok} "
                f"{o.wall_s:.1f} s {o.problems[:3]}")
            if o.problems and not o.ok:
                break
            # a missed moment still counts as tried; retry with others so the total is reached
            done += max(o.kills, 1)
            i += 1
        total = Outcome()
        for o in outcomes:
            for f in ("kills", "duplicates", "lost", "double_counted", "double_approved", "books_differ",
                      "unsettled", "misattributed", "unrecorded_usd", "temp_files", "wall_s"):
                setattr(total, f, getattr(total, f) + getattr(o, f))
            total.overspend_usd = max(total.overspend_usd, o.overspend_usd)
            total.missed += o.missed
            total.problems += o.problems
        total.identical = all(o.identical for o in outcomes)
        scenarios = scenario_suite(base, work, log) if with_scenarios else []
        return {"total": total, "campaigns": outcomes, "reference_wall_s": ref_wall, "counts": counts,
                "scenarios": scenarios}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--per-campaign", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    ap.add_argument("--no-scenarios", action="store_true", help="random kills only")
    a = ap.parse_args(argv)
    work = None
    if a.keep:
        work = Path(a.keep)
        work.mkdir(parents=True, exist_ok=True)
    res = crash_suite(kills=a.kills, per_campaign=a.per_campaign, seed=a.seed, work=work,
                      with_scenarios=not a.no_scenarios)
    t = res["total"]
    n_camp = len(res["campaigns"])
    print()
    print("| kills | campaigns | duplicate HITs | answers lost | counted twice | misattributed | double-approved | "
          "paid, unrecorded | overspend | books differ | identical result | wall time (s) | uninterrupted (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {t.kills} | {n_camp} | {t.duplicates} | {t.lost} | {t.double_counted} | {t.misattributed} | "
          f"{t.double_approved} | ${t.unrecorded_usd:.2f} | ${t.overspend_usd:.2f} | {t.books_differ} | "
          f"{'yes' if t.identical else 'NO'} | {t.wall_s:.0f} | {res['reference_wall_s']:.1f} |")
    bad = False
    if res["scenarios"]:
        print()
        print("| scenario | kills | late / MTurk-approved assignments | duplicate HITs | answers lost | "
              "answers misattributed | paid, unrecorded | overspend | wall time (s) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, o in res["scenarios"]:
            bad |= not o.ok
            print(f"| {name} | {o.kills} | {o.late} / {o.by_mturk} | {o.duplicates} | {o.lost + o.double_counted} | "
                  f"{o.misattributed} | ${o.unrecorded_usd:.2f} | ${o.overspend_usd:.2f} | {o.wall_s:.0f} |")
            for p in o.problems:
                print("PROBLEM:", p)
    if t.missed:
        print(f"\nmoments not reached (campaign over first): {len(t.missed)}")
    if t.temp_files:
        print(f"temp files left behind by kills: {t.temp_files}")
    for p in t.problems:
        print("PROBLEM:", p)
    return 0 if (t.problems == [] and t.identical and not bad) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
