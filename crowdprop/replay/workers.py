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


# numpy's SeedSequence (its hashmix and mix, 32-bit words, a pool of 4) and PCG64 (128-bit LCG,
# XSL-RR output): first_random repeats what default_rng(seed).random() computes, for many seeds.
_M32, _M64, _M128 = 0xFFFFFFFF, (1 << 64) - 1, (1 << 128) - 1
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (0x2360ED051FC65DA4 << 64) | 0x4385DF649FCCF645


def _hash_consts(init: int, mult: int, n: int) -> list[tuple[int, int]]:
    """The (xor, multiplier) pairs of ``n`` successive hashes: they do not depend on the data."""
    out, h = [], init
    for _ in range(n):
        nxt = (h * mult) & _M32
        out.append((h, nxt))
        h = nxt
    return out


_HASH_A = _hash_consts(_INIT_A, _MULT_A, 4 + 4 * 3)  # mixing the entropy into the pool
_HASH_B = _hash_consts(_INIT_B, _MULT_B, 8)  # generating 4 64-bit words of state


def first_random(seeds) -> np.ndarray:
    """``np.random.default_rng(int(s)).random()`` for each 64-bit seed ``s``, bit for bit.

    The seeding (SeedSequence over the seed's 32-bit words, then PCG64's set-seed) runs on
    arrays; the two steps of the 128-bit generator and its output, on Python integers. About a
    tenth of the time of building a generator per seed (tests/crowd/test_answers_batch.py
    checks it against default_rng)."""
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    u32 = np.uint32
    consts = iter(_HASH_A)

    def shift_xor(v: np.ndarray) -> np.ndarray:
        return np.bitwise_xor(v, np.right_shift(v, u32(16)))

    def hashmix(v: np.ndarray) -> np.ndarray:
        x, m = next(consts)
        return shift_xor(np.multiply(np.bitwise_xor(v, u32(x)), u32(m), dtype=u32))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return shift_xor(np.subtract(np.multiply(u32(_MIX_L), x, dtype=u32), np.multiply(u32(_MIX_R), y, dtype=u32),
                                     dtype=u32))

    zero = np.zeros(len(s), u32)
    # a seed below 2**32 is one word; the pool's missing words hash as zeros either way
    words = [(s & np.uint64(_M32)).astype(u32), (s >> np.uint64(32)).astype(u32), zero, zero]
    with np.errstate(over="ignore"):
        pool = [hashmix(w) for w in words]
        for i_src in range(4):
            for i_dst in range(4):
                if i_src != i_dst:
                    pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
        state = []
        for i, (x, m) in enumerate(_HASH_B):
            state.append(shift_xor(np.multiply(np.bitwise_xor(pool[i % 4], u32(x)), u32(m), dtype=u32))
                         .astype(np.uint64))
    w64 = [(state[2 * i] | (state[2 * i + 1] << np.uint64(32))).tolist() for i in range(4)]
    out = np.empty(len(s))
    for j, (s_hi, s_lo, i_hi, i_lo) in enumerate(zip(*w64)):
        inc = ((((i_hi << 64) | i_lo) << 1) | 1) & _M128
        st = (((inc + ((s_hi << 64) | s_lo)) & _M128) * _PCG_MULT + inc) & _M128  # seeded
        st = (st * _PCG_MULT + inc) & _M128  # the first draw: a step, then the output
        x = (st >> 64) ^ (st & _M64)
        rot = st >> 122
        out[j] = ((((x >> rot) | (x << ((64 - rot) & 63))) & _M64) >> 11) * (1.0 / 9007199254740992.0)
    return out


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
        return self.answers(worker, [question_key], [truth])[0]

    def answers(self, worker: int, question_keys: list[str], truth) -> list[bool]:
        """One worker's yes/no to each question (``truth``: their true answers), from the first
        draw of ``rng_for("answer", seed, worker id, key)`` per question: a spammer says yes under
        0.5, another worker is right under their accuracy. The draws are made for all the
        questions at once (:func:`first_random`)."""
        if not question_keys:
            return []
        wid = self.worker_ids[worker]
        u = first_random(np.fromiter((_key_seed("answer", self.seed, wid, k) for k in question_keys),
                                     dtype=np.uint64, count=len(question_keys)))
        if self.kind[worker] == "spammer":
            return (u < 0.5).tolist()
        t = np.asarray(truth, dtype=bool)
        return np.where(u < self.accuracy[worker], t, ~t).tolist()

    def seconds(self, worker: int, key: str, n_questions: int) -> float:
        """Time a worker spends on ``n_questions``: log-normal around the mean per question.

        Spammers click through at a quarter of the time."""
        rng = rng_for("time", self.seed, self.worker_ids[worker], key)
        per = self.seconds_per_question * (0.25 if self.kind[worker] == "spammer" else 1.0)
        return float(np.sum(rng.lognormal(np.log(per) - 0.08, 0.4, size=n_questions)))
