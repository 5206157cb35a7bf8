"""From JSON to the first round at scale: ``crowdprop init`` by stage, then rounds, report, export, status.

For each size a synthetic set is made (``crowdprop synth``, kept under --data for the
next run), then, each in its own process:

* ``init`` with the local engine (--workers processes): wall seconds by stage (gt: read
  and validate the ground truth; predictions: read and validate the results; match;
  features: the clustering embedding; trees; write: Parquet and the rest), the CPU
  seconds a plain reading of both files takes on one core (in pieces, decoded as init
  decodes them, no checks: the floor of the read stages), the CPU seconds of
  init and its workers together and of init's own process alone (the part no worker
  can take: on an idle machine with W cores init needs at least the larger of it and
  the total over W), and their peak resident memory together;
* ``crowdprop run --rounds R`` (simulated crowd): rounds per second, its wall and CPU seconds,
  from its campaign.log the seconds to the first round's commit (loading the run directory
  and one round) and the median seconds of each later round, and peak memory;
* ``crowdprop report --html``, ``crowdprop export``, ``crowdprop status``: seconds;
* with --ray, ``init --engine ray`` on a local Ray with --workers CPUs: its time over the
  local engine's, and whether the two run directories are the same byte for byte
  (campaign.json's creation time aside);
* with --tile K, a second row for K copies of the new run directory before its first round
  (``benchmarks/tile_rundir.py``: K times the masks, each copy its own classes): the same
  ``crowdprop run`` figures, ``report --html``, ``export`` and ``status``. Ten copies of 1M masks time the rounds of a 10M-mask
  campaign without making and initialising a 10M synthetic set (an hour and ten minutes).

The machine's load average is printed with each row: on a shared machine wall seconds
grow with it.

    python benchmarks/bench_scale.py                              # 100k
    python benchmarks/bench_scale.py --sizes 100000 1000000 --ray
    python benchmarks/bench_scale.py --sizes 10000000 --classes 300 --rounds 3
    python benchmarks/bench_scale.py --sizes 1000000 --rounds 3 --tile 10   # + rounds at 10M
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


class PeakRSS:
    """Peak resident memory of a process and its descendants, sampled every ``every`` seconds,
    and the CPU seconds they used (``cpu``; as last sampled for each process)."""

    def __init__(self, pid: int, every: float = 0.2):
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._cpu: dict = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        self._cpu[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())

    @property
    def main_cpu(self) -> float:
        """CPU seconds of the process itself (without its workers)."""
        return self._cpu.get(self.proc.pid, 0.0)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _cli(*args: str, env=None, cpu: dict | None = None) -> tuple[float, int]:
    """Run ``crowdprop ARGS``; wall seconds and peak RSS (bytes) of it and its children
    (their CPU seconds in ``cpu["cpu"]`` when ``cpu`` is given)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "crowdprop", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env)
    with PeakRSS(p.pid) as peak:
        _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"crowdprop {' '.join(args)} failed ({p.returncode}): {err[-2000:]}")
    if cpu is not None:
        cpu["cpu"] = peak.cpu
    return time.perf_counter() - t0, peak.peak


def _round_times(run: Path) -> tuple[float, float]:
    """From RUN/campaign.log of the last ``crowdprop run``: seconds from its start to the first
    round's commit (loading the run directory, then one round) and the median seconds between
    later commits (one round each, state reloaded and labels.parquet written included)."""
    import datetime as dt
    import statistics

    def at(line: str) -> float:
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    lines = (run / "campaign.log").read_text(encoding="utf-8").splitlines()
    start = max(i for i, x in enumerate(lines) if "crowdprop run " in x and "(pid" in x)
    t0 = at(lines[start])
    commits = [at(x) for x in lines[start:] if "crowdprop.campaign.loop: round " in x and " questions in " in x]
    if not commits:
        return float("nan"), float("nan")
    later = [b - a for a, b in zip(commits, commits[1:])]
    return commits[0] - t0, statistics.median(later) if later else float("nan")


def _data(root: Path, n: int, classes: int) -> Path:
    d = root / f"synth-{n}-{classes}"
    if not (d / "predictions.json").exists():
        _cli("synth", "--masks", str(n), "--classes", str(classes), "--seed", "0", "-o", str(d))
    return d


def _parse_only(d: Path) -> float:
    """CPU seconds to read both files in pieces and decode them as init does (runs of records
    into typed records, anything else with json), one core, no checks."""
    from crowdprop.masks import batches, jsonstream

    t0 = time.process_time()
    for name in ("gt.json", "predictions.json"):
        for ev in jsonstream.events(d / name):
            if ev[0] == "items":
                kind = batches._Ann if ev[1] == "annotations" else batches._Pred if ev[1] is None else None
                if kind is None or batches._typed(kind, ev[2]) is None:
                    jsonstream.parse_items(ev[2])
    return time.process_time() - t0


def _init_child(d: Path, run: Path, engine: str, workers: int) -> dict:
    from crowdprop.campaign.init import init_run
    from crowdprop.engine import active, make_engine, timed

    stages: dict = {}
    t0 = time.perf_counter()
    with make_engine(engine, workers) as eng, active(eng), timed(stages):
        init_run(run, predictions=d / "predictions.json", gt=d / "gt.json", features=d / "features.npy",
                 crowd={"kind": "simulated"}, progress=False)
    stages["init"] = time.perf_counter() - t0
    stages["write"] = stages["init"] - sum(stages.get(k, 0.0) for k in ("gt", "predictions", "match", "features",
                                                                         "trees"))
    return stages


def _init(d: Path, run: Path, engine: str, workers: int) -> tuple[dict, int]:
    p = subprocess.Popen([sys.executable, __file__, "--_init", str(d), str(run), engine, str(workers)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRSS(p.pid) as peak:
        out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"init failed: {err[-3000:]}")
    stages = json.loads(out.strip().splitlines()[-1])
    stages["init_cpu"] = peak.cpu
    stages["init_main_cpu"] = peak.main_cpu
    return stages, peak.peak


def _same_bytes(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if fa != fb:
        return False
    for rel in fa:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.name == "campaign.json":
            x, y = json.loads(x), json.loads(y)
            for c in (x, y):
                c.pop("created", None)
        if x != y:
            return False
    return True


def _run_row(run: Path, a, row: dict, *, html: bool = True) -> None:
    """Time ``crowdprop run --rounds`` on ``run`` (then report, export, status) into ``row``."""
    used: dict = {}
    t, peak = _cli("run", str(run), "--rounds", str(a.rounds), cpu=used)
    row["rounds_per_s"] = a.rounds / t
    row["run_s"] = t
    row["run_cpu"] = used["cpu"]
    row["first_round"], row["round_s"] = _round_times(run)
    row["run_gb"] = peak / 2**30
    if html:
        row["report_html"], _ = _cli("report", str(run), "--html")
    row["export"], _ = _cli("export", str(run), "-o", str(run.parent / f"{run.name}-accepted.json"))
    row["status"], _ = _cli("status", str(run))


def _one(n: int, a) -> list[dict]:
    import shutil

    root = Path(a.data)
    d = _data(root, n, a.classes)
    work = root / f"runs-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    row = {"masks": n, "classes": a.classes, "load": os.getloadavg()[0]}
    row["parse"] = _parse_only(d)
    stages, peak = _init(d, work / "local", "local", a.workers)
    row.update(stages)
    row["init_gb"] = peak / 2**30
    if a.ray:
        ray_stages, _ = _init(d, work / "ray", "ray", a.workers)
        row["ray_ratio"] = ray_stages["init"] / stages["init"]
        row["ray_same"] = _same_bytes(work / "local", work / "ray")
        shutil.rmtree(work / "ray")
    rows = [row]
    if a.tile > 1:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tile_rundir import tile_run_dir

        tile_run_dir(work / "local", work / "tiled", a.tile)
        rows.append({"masks": n * a.tile, "classes": a.classes * a.tile, "load": os.getloadavg()[0],
                     "tiled": f"{a.tile} x {n:,}"})
    _run_row(work / "local", a, row)
    if a.tile > 1:
        rows[1]["load"] = os.getloadavg()[0]
        _run_row(work / "tiled", a, rows[1])
    if not a.keep:
        shutil.rmtree(work)
    return rows


COLUMNS = [("masks", "masks"), ("classes", "classes"), ("tiled", "tiled"), ("load", "load avg"), ("parse", "parse alone CPU s"),
           ("gt", "gt s"), ("predictions", "predictions s"), ("match", "match s"), ("features", "features s"),
           ("trees", "trees s"), ("write", "write s"), ("init", "init s"), ("init_cpu", "init CPU s"),
           ("init_main_cpu", "main process CPU s"), ("init_gb", "init peak GB"),
           ("rounds_per_s", "rounds/s"), ("run_s", "run s"), ("run_cpu", "run CPU s"),
           ("first_round", "start + round 1 s"), ("round_s", "round s"), ("run_gb", "run peak GB"), ("report_html", "report --html s"),
           ("export", "export s"), ("status", "status s"), ("ray_ratio", "ray / local"), ("ray_same", "same bytes")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--workers", type=int, default=2, help="local engine processes and local Ray CPUs (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of crowdprop run to time (default 5)")
    ap.add_argument("--ray", action="store_true", help="also init with --engine ray and compare")
    ap.add_argument("--data", default="bench-scale-data", help="where synthetic sets and run directories go")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--tile", type=int, default=1, metavar="K",
                    help="also time the rounds of K copies of each new run directory (tile_rundir.py)")
    ap.add_argument("--_init", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._init:
        d, run, engine, workers = a._init
        print(json.dumps(_init_child(Path(d), Path(run), engine, int(workers))))
        return
    rows = [r for n in a.sizes for r in _one(n, a)]
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "-")
            cells.append(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else
                         str(v) if not isinstance(v, float) else f"{v:.2f}" if v < 10 else f"{v:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
