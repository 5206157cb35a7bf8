"""Kill the controller with SIGKILL at random moments; nothing may be lost, paid twice or overspent.

    python benchmarks/bench_crash.py                 # 50 kills (10 campaigns x 5 kills)
    python benchmarks/bench_crash.py --kills 10 --per-campaign 5 --seed 1

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
=========================== ==========================================================

After the last kill of a campaign the controller runs to the end, and the
endpoint's books (``GET URL/_ledger`` and the MTurk API) are checked against the
run directory and against an uninterrupted run with the same seed:
duplicate HITs, answers lost or counted twice, assignments paid twice, spend
over the budget, and the final accepted set (:func:`crowdprop.campaign.export.final_status`).
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

    def assignments(self) -> tuple[list[dict], list[dict]]:
        """Every HIT and every assignment (all public states) through the MTurk API."""
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
        return hits, asg

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
    overspend_usd: float = 0.0
    books_differ: int = 0
    unsettled: int = 0
    identical: bool = False
    temp_files: int = 0
    wall_s: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.duplicates == self.lost == self.double_counted == self.double_approved == self.books_differ
                == self.unsettled == 0 and self.overspend_usd <= 0 and self.identical)


def check(run_dir: Path, ep: Endpoint, reference: np.ndarray | None, out: Outcome) -> Outcome:
    """The endpoint's books against the run directory (and the reference result)."""
    from crowdprop.campaign.export import final_status
    from crowdprop.campaign.store import RunDir
    from crowdprop.crowd.mturk import parse_answers

    rd = RunDir(run_dir)
    led = ep.ledger()
    hits_api, asg_api = ep.assignments()
    hits = rd.read_rounds("hits")
    asg = rd.read_rounds("assignments")
    ans = rd.read_rounds("answers")
    spend = rd.read_rounds("spend")
    # one HIT per token, and every HIT on the endpoint is one the run directory knows
    dup = len(led["tokens_with_several_hits"]) + max(0, led["hits_created"] - hits["token"].nunique())
    dup += len({h["HITId"] for h in hits_api} - set(hits["hit_id"]))
    dup += int(hits["token"].duplicated().sum())
    out.duplicates += dup
    if dup:
        out.problems.append(f"duplicate HITs: {led['tokens_with_several_hits']}")
    # every submitted assignment exactly once, its answers exactly once
    ids = asg["assignment_id"]
    out.double_counted += int(ids.duplicated().sum())
    out.double_counted += int(ans.duplicated(["assignment_id", "question_id"]).sum())
    known = set(ids)
    by_asg = {k: g for k, g in ans.groupby("assignment_id")}
    for a in asg_api:
        aid = a["AssignmentId"]
        if aid not in known:
            out.lost += 1
            out.problems.append(f"assignment {aid} ({a['AssignmentStatus']}) is not in the run directory")
            continue
        got, _ = parse_answers(a.get("Answer") or "", None, max_bytes=1 << 24)
        g = by_asg.get(aid)
        mine = {} if g is None else {q: bool(v) for q, v in zip(g["question_id"], g["label"])}
        if mine != got:
            out.lost += 1
            out.problems.append(f"assignment {aid}: answers differ from the endpoint's")
    out.unsettled += sum(a["AssignmentStatus"] == "Submitted" for a in asg_api)
    api_ids = {a["AssignmentId"] for a in asg_api}
    out.double_counted += len(known - api_ids)  # answers the endpoint never had
    # paid once
    out.double_approved += len(led["approved_more_than_once"]) + sum(v > 1 for v in led["bonus_counts"].values())
    approved = asg["approved"].astype(bool) if len(asg) else asg.get("approved", [])
    if led["approvals"] != int(np.sum(approved)):
        out.books_differ += 1
        out.problems.append(f"endpoint approvals {led['approvals']} != run's {int(np.sum(approved))}")
    # money
    spent_run = round(float(spend["usd"].sum()) if len(spend) else 0.0, 2)
    spent_ep = float(led["spent_usd"])
    if abs(spent_run - spent_ep) > 0.001:
        out.books_differ += 1
        out.problems.append(f"endpoint spent ${spent_ep:.2f}, run directory says ${spent_run:.2f}")
    budget = rd.config.campaign.budget_usd
    out.overspend_usd = max(out.overspend_usd, round(max(spent_ep, spent_run) - budget, 2), 0.0)
    out.temp_files += sum(1 for p in run_dir.rglob("*") if p.name.endswith(".tmp"))
    if reference is not None:
        status = final_status(rd)
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
            p = controller(run_dir, ep.url, {"hook": hook, "k": int(k)})
            if p.returncode == -signal.SIGKILL:
                out.kills += 1
                out.moments.append(f"{hook}#{k}")
            elif p.returncode == 0:
                out.missed.append(f"{hook}#{k}")  # the campaign ended before the k-th call
            else:
                out.problems.append(f"controller failed (rc {p.returncode}) after {hook}#{k}: {p.stderr[-1500:]}")
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
                log=print) -> dict:
    """Run ``kills`` SIGKILLs over campaigns of ``per_campaign`` kills each; the first campaign
    starts with :data:`SPECIFIC`. Returns the totals and the per-campaign outcomes."""
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
                      "unsettled", "temp_files", "wall_s"):
                setattr(total, f, getattr(total, f) + getattr(o, f))
            total.overspend_usd = max(total.overspend_usd, o.overspend_usd)
            total.missed += o.missed
            total.problems += o.problems
        total.identical = all(o.identical for o in outcomes)
        return {"total": total, "campaigns": outcomes, "reference_wall_s": ref_wall, "counts": counts}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--per-campaign", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    a = ap.parse_args(argv)
    work = None
    if a.keep:
        work = Path(a.keep)
        work.mkdir(parents=True, exist_ok=True)
    res = crash_suite(kills=a.kills, per_campaign=a.per_campaign, seed=a.seed, work=work)
    t = res["total"]
    n_camp = len(res["campaigns"])
    print()
    print("| kills | campaigns | duplicate HITs | answers lost | counted twice | double-approved | "
          "overspend | books differ | identical result | wall time (s) | uninterrupted (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {t.kills} | {n_camp} | {t.duplicates} | {t.lost} | {t.double_counted} | {t.double_approved} | "
          f"${t.overspend_usd:.2f} | {t.books_differ} | {'yes' if t.identical else 'NO'} | {t.wall_s:.0f} | "
          f"{res['reference_wall_s']:.1f} |")
    if t.missed:
        print(f"\nmoments not reached (campaign over first): {len(t.missed)}")
    if t.temp_files:
        print(f"temp files left behind by kills: {t.temp_files}")
    for p in t.problems:
        print("PROBLEM:", p)
    return 0 if (t.problems == [] and t.identical) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
