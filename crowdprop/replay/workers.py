"""Simulated workers who answer "is this mask correct?" from ground truth.

A pool of ``W`` workers is drawn once from a seed:

- ordinary workers have accuracy ~ N(accuracy, accuracy_spread), clipped to [0.5, 1];
- a share ``spammer_share`` answer at random (accuracy 0.5, "yes" with prob. 0.5);
- a share ``sloppy_share`` have accuracy ``sloppy_accuracy``.

Every answer is a pure function of (seed, worker, question key): the same
question asked of the same worker again gets the same answer, whichever process
asks and however often a campaign was interrupted. No global random state.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..config import SimulationSection


def _key_seed(*parts: object) -> int:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (strings, ints)."""
    return np.random.default_rng(_key_seed(*parts))


@dataclass(frozen=True)
class WorkerPool:
    worker_ids: tuple[str, ...]
    accuracy: np.ndarray  # (W,)
    kind: tuple[str, ...]  # "ordinary" | "spammer" | "sloppy"
    seconds_per_question: float
    seed: int

    @classmethod
    def build(cls, cfg: SimulationSection, seed: int) -> "WorkerPool":
        rng = rng_for("worker-pool", seed)
        w = cfg.workers
        n_spam = int(round(cfg.spammer_share * w))
        n_sloppy = int(round(cfg.sloppy_share * w))
        n_spam = min(n_spam, w)
        n_sloppy = min(n_sloppy, w - n_spam)
        kinds = np.array(["ordinary"] * w, dtype=object)
        perm = rng.permutation(w)
        kinds[perm[:n_spam]] = "spammer"
        kinds[perm[n_spam:n_spam + n_sloppy]] = "sloppy"
        acc = np.clip(rng.normal(cfg.accuracy, cfg.accuracy_spread, size=w), 0.5, 1.0)
        acc[kinds == "spammer"] = 0.5
        acc[kinds == "sloppy"] = cfg.sloppy_accuracy
        ids = tuple(f"SIMW{seed % 10000:04d}{i:04d}" for i in range(w))
        return cls(ids, acc, tuple(kinds.tolist()), cfg.seconds_per_question, seed)

    def __len__(self) -> int:
        return len(self.worker_ids)

    def index(self, worker_id: str) -> int:
        return self.worker_ids.index(worker_id)

    def pick(self, key: str, n: int, exclude: set[str] | frozenset = frozenset()) -> list[int]:
        """``n`` distinct workers for a HIT (MTurk never gives a worker the same HIT twice)."""
        rng = rng_for("pick", self.seed, key)
        allowed = [i for i in range(len(self)) if self.worker_ids[i] not in exclude]
        if not allowed:
            return []
        order = rng.permutation(len(allowed))[: min(n, len(allowed))]
        return [allowed[i] for i in order]

    def answer(self, worker: int, question_key: str, truth: bool) -> bool:
        """One worker's yes/no to one question whose true answer is ``truth``."""
        rng = rng_for("answer", self.seed, self.worker_ids[worker], question_key)
        if self.kind[worker] == "spammer":
            return bool(rng.random() < 0.5)
        correct = rng.random() < self.accuracy[worker]
        return bool(truth if correct else not truth)

    def seconds(self, worker: int, key: str, n_questions: int) -> float:
        """Time a worker spends on ``n_questions``: log-normal around the mean per question.

        Spammers click through at a quarter of the time."""
        rng = rng_for("time", self.seed, self.worker_ids[worker], key)
        per = self.seconds_per_question * (0.25 if self.kind[worker] == "spammer" else 1.0)
        return float(np.sum(rng.lognormal(np.log(per) - 0.08, 0.4, size=n_questions)))
