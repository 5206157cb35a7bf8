"""A round's frozen plan: what it asks, journaled before the first CreateHIT and reused verbatim.

Once a round has been planned (the policy's plan, the questions table, the HITs
with their rewards, assignments and tokens, and the policy's further tables),
the plan is written to ``journal/round=k/``::

    questions.parquet        the questions table
    extra.<name>.parquet     each further table of the round (audits, verdicts, ...)
    plan.json                the policy's plan, every HIT request, and what the plan
                             was made from (configuration, gold pool, version);
                             written last: the plan exists once this file does

A run that finds ``plan.json`` finishes that round as planned, whatever changed
since (configuration, gold pool, crowdprop's version): the HITs are live and
workers answer the questions they were shown. Changes take effect from the next
round; :func:`changes` lists them for the log.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..crowd.base import HitRequest, Question
from ..errors import StateError

if TYPE_CHECKING:
    from ..policy.controller import RoundPlan
from ..io import atomic_write_text, read_parquet, write_parquet
from ..policy.controller import RoundPlan
from .store import RunDir

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
FORMAT = 1


@dataclass
class RoundPlanned:
    """What a round asks: the policy's plan, the questions table, the HITs carrying them, and
    further tables committed with the round (``extra``). ``stop``: a reason to stop instead
    (nothing to ask, or no HIT within the budget). ``settle_only``: a round that asks nothing
    and only polls and settles HITs of earlier rounds that can still receive work."""

    plan: RoundPlan | None
    """None only with ``stop`` (a round limit reached before anything was planned)."""
    questions: pd.DataFrame | None
    hits: list
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    stop: str | None = None
    settle_only: bool = False


# ------------------------------------------------------------------ a generic codec for the policy's plan
PLAN_CLASSES: dict[str, type] = {f"{c.__module__}:{c.__qualname__}": c for c in (RoundPlan,)}
"""The dataclasses a plan may hold, by the name plan.json records: decoding looks them up here, never
imports what a file names."""


_PLAIN = (int, float, str, bool, type(None))
"""Types :func:`encode` gives back as they are (exactly these: not their subclasses, nor numpy scalars)."""


def encode(obj):
    """JSON-ready form of a plan object: dataclasses, dicts with int keys, numpy arrays and scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if PLAN_CLASSES.get(f"{cls.__module__}:{cls.__qualname__}") is not cls:
            raise TypeError(f"cannot journal a {cls.__qualname__} in a round's plan (not in PLAN_CLASSES)")
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        # a list of plain scalars (a round's free splits: 400,000 node ids at 10M masks) is its own encoding
        items = list(obj) if all(type(x) in _PLAIN for x in obj) else [encode(x) for x in obj]
        return {"__list__": items, "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot journal a {type(obj).__name__} in a round's plan")


def decode(obj):
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if "__dataclass__" in obj:
            cls = PLAN_CLASSES.get(obj["__dataclass__"])
            if cls is None:
                raise StateError(f"{PLAN_FILE}: unknown class {obj['__dataclass__']!r} in a round's plan")
            return cls(**{k: decode(v) for k, v in obj["fields"].items()})
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=obj["dtype"])
        if "__dict__" in obj:
            return {decode(k): decode(v) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [decode(x) for x in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


_QUESTION_FIELDS = tuple(f.name for f in dataclasses.fields(Question))


def _hit_record(hit: HitRequest) -> dict:
    rec = {f.name: getattr(hit, f.name) for f in dataclasses.fields(hit) if f.name != "questions"}
    # what dataclasses.asdict gives for a Question (scalar fields), without its deep copy of each
    rec["questions"] = [{k: getattr(q, k) for k in _QUESTION_FIELDS} for q in hit.questions]
    return rec


def _hit_from(rec: dict) -> HitRequest:
    rec = dict(rec)
    rec["questions"] = tuple(Question(**q) for q in rec["questions"])
    return HitRequest(**rec)


# ------------------------------------------------------------------ what a plan was made from
def golds_digest(run: RunDir) -> str:
    g = run.golds
    body = json.dumps([g["mask_row"].astype(int).tolist(), g["label"].astype(int).tolist()]) if len(g) else "[]"
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


def made_from(run: RunDir) -> dict:
    """The configuration, gold pool and crowdprop version a round is planned from."""
    from .. import __version__

    return {"config": json.loads(run.config.to_json()), "golds": golds_digest(run), "version": __version__}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changes(run: RunDir, meta: dict) -> list[str]:
    """What differs between what a frozen plan was made from and the run directory now:
    configuration keys (``crowd.reward_usd``), ``gold pool``, ``crowdprop version``."""
    now = made_from(run)
    a, b = _flatten(meta.get("config", {})), _flatten(now["config"])
    out = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if meta.get("golds") != now["golds"]:
        out.append("gold pool")
    if meta.get("version") != now["version"]:
        out.append(f"crowdprop version ({meta.get('version')} -> {now['version']})")
    return out


# ------------------------------------------------------------------ freeze and restore
def freeze(run: RunDir, r: int, planned: RoundPlanned) -> None:
    """Journal ``planned`` as round ``r``'s plan (``plan.json`` last)."""
    d = run.journal_dir(r)
    d.mkdir(parents=True, exist_ok=True)
    run.journal_write(r, "questions", planned.questions)
    for name, df in planned.extra.items():
        write_parquet(d / f"extra.{name}.parquet", df)
    doc = {"format": FORMAT, "round": r, "settle_only": bool(planned.settle_only), "plan": encode(planned.plan),
           "hits": [_hit_record(h) for h in planned.hits], "extra": sorted(planned.extra), **made_from(run)}
    atomic_write_text(d / PLAN_FILE, json.dumps(doc, sort_keys=True))


def frozen(run: RunDir, r: int) -> bool:
    return (run.journal_dir(r) / PLAN_FILE).exists()


def restore(run: RunDir, r: int) -> tuple[RoundPlanned, dict] | None:
    """Round ``r``'s frozen plan and what it was made from, or None when it has none."""
    d = run.journal_dir(r)
    p = d / PLAN_FILE
    if not p.exists():
        return None
    doc = json.loads(p.read_text())
    questions = run.journal_read(r, "questions")
    extra = {name: read_parquet(d / f"extra.{name}.parquet") for name in doc.get("extra", [])}
    planned = RoundPlanned(decode(doc["plan"]), questions, [_hit_from(h) for h in doc["hits"]], extra=extra,
                           settle_only=bool(doc.get("settle_only")))
    return planned, {k: doc.get(k) for k in ("config", "golds", "version")}


CREW_FILES = ("published.jsonl", "received.parquet", "settled.jsonl", "expired.jsonl", "bonuses.jsonl")
"""Journal files about the crowd's side of a round (the rest is its plan)."""
