"""The campaign's one ledger, in integer cents.

What was paid is the ``spend`` table of the committed rounds (one row per reward
and per fee, column ``cents``; older run directories hold ``usd``, read as
cents) plus the approvals journaled in the round in progress. What may still be
paid is the most that the live HITs can cost: every slot of a published HIT
whose work is not yet settled, at the reward and fee it was published with.
The loop checks the cap against both before each HIT it publishes; status and
reports read the same figures.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..crowd.base import Fees
from ..money import cap_cents, cents, usd
from .store import RunDir

FEES = Fees()
"""MTurk's commission (the one fee function)."""

SPEND_COLUMNS = ["round", "assignment_id", "kind", "cents"]


def spend_cents(spend: pd.DataFrame) -> pd.Series:
    """Cents of each row of a spend table (``cents``, or the ``usd`` of an older run directory)."""
    if spend is None or len(spend) == 0:
        return pd.Series(dtype=np.int64)
    if "cents" in spend:
        return spend["cents"].astype(np.int64)
    return spend["usd"].map(cents).astype(np.int64)


def spent_cents(run: RunDir, *, spend: pd.DataFrame | None = None) -> int:
    """Rewards, fees and bonuses paid in the committed rounds, and bonuses sent with ``crowdprop bonus``."""
    spend = run.read_rounds("spend") if spend is None else spend
    return int(spend_cents(spend).sum()) + bonus_cents(run)


def spent_by_kind(spend: pd.DataFrame) -> dict[str, int]:
    """``{"reward": cents, "fee": cents, "bonus": cents, ...}`` of a spend table."""
    if spend is None or len(spend) == 0:
        return {}
    return {str(k): int(v) for k, v in spend_cents(spend).groupby(spend["kind"].to_numpy()).sum().items()}


def final_state(rec: dict) -> str:
    """``Approved`` / ``Rejected``: what a journaled settlement ended as (the crowd's state when it
    was reconciled, else the decision)."""
    return rec.get("final") or ("Approved" if rec.get("approve") else "Rejected")


def settled_record_cents(rec: dict) -> int:
    """Cents a journaled settlement paid (0 unless approved)."""
    if final_state(rec) != "Approved":
        return 0
    if "reward_cents" in rec:
        return int(rec.get("reward_cents") or 0) + int(rec.get("fee_cents") or 0)
    return cents(rec.get("reward_usd", 0.0) or 0.0) + cents(rec.get("fee_usd", 0.0) or 0.0)


def journal_settlements(run: RunDir, r: int) -> dict[str, dict]:
    """The journaled settlement of each assignment of round ``r``: the decision, then any
    reconciliation with the crowd's state (``final``) merged into it."""
    out: dict[str, dict] = {}
    for rec in run.journal_lines(r, "settled"):
        aid = rec.get("assignment_id")
        if aid is None:
            continue
        out[aid] = {**out.get(aid, {}), **rec}
    return out


def journal_cents(run: RunDir, r: int) -> int:
    """Rewards and fees of the approvals journaled in round ``r`` (in progress)."""
    return sum(settled_record_cents(x) for x in journal_settlements(run, r).values())


def hit_exposure_cents(reward_cents: int, assignments: int, open_slots: int) -> int:
    """The most ``open_slots`` unsettled slots of a HIT can still cost."""
    return max(0, int(open_slots)) * (int(reward_cents) + FEES.assignment_fee_cents(reward_cents, assignments))


def hits_reward_cents(hits: pd.DataFrame) -> np.ndarray:
    """Reward per assignment in cents of each row of a hits table (``reward_cents`` or older ``reward_usd``)."""
    if "reward_cents" in hits:
        return hits["reward_cents"].to_numpy(np.int64)
    return np.array([cents(x) for x in hits["reward_usd"]], dtype=np.int64)


def hit_cost_estimate(run: RunDir) -> dict:
    """What the remaining budget buys: ``remaining_usd``, ``spent_usd``, ``hit_usd``, ``hits``.

    ``hit_usd`` is the most one full HIT can cost (every assignment approved,
    MTurk's fee included); ``hits`` how many of those the remaining budget pays.
    Computed in cents; dollars are the view.
    """
    from ..hits.batching import reward_cents_for

    cfg = run.config
    spent = spent_cents(run)
    remaining = max(0, cap_cents(cfg.campaign.budget_usd) - spent)
    n = cfg.crowd.assignments_per_hit
    reward = reward_cents_for(cfg.crowd.questions_per_hit, cfg.crowd)
    per_hit = FEES.hit_cost_cents(reward, n)
    return {"spent_usd": usd(spent), "remaining_usd": usd(remaining), "hit_usd": usd(per_hit),
            "reward_usd": usd(reward), "fee_usd": usd(FEES.assignment_fee_cents(reward, n)),
            "hits": remaining // per_hit if per_hit > 0 else 0,
            "questions_per_hit": cfg.crowd.questions_per_hit, "assignments": n}


# -------------------------------------------------------------------- actions outside the round loop
HIT_ACTIONS = "hit_actions.jsonl"
"""``RUN_DIR/hit_actions.jsonl``: every action of ``crowdprop hits`` and ``crowdprop bonus``, one JSON
line written (and fsynced) before the call is sent, and one after it with its outcome."""


def record_action(run: RunDir, record: dict) -> None:
    """Append one line to :data:`HIT_ACTIONS` and fsync it before returning."""
    import time

    from ..io import append_jsonl

    append_jsonl(run.path / HIT_ACTIONS, {"time": round(time.time(), 3), **record})


def actions(run: RunDir) -> list[dict]:
    """The lines of :data:`HIT_ACTIONS` (none when the file does not exist)."""
    from ..io import read_jsonl

    return read_jsonl(run.path / HIT_ACTIONS)


def _failed(recs: list[dict]) -> set[str]:
    """Ids of actions that MTurk refused (nothing happened)."""
    return {r["id"] for r in recs if r.get("event") == "refused" and "id" in r}


def extra_assignments(run: RunDir) -> dict[str, int]:
    """``{hit_id: assignments added}`` by ``crowdprop hits extend --assignments``: every extension
    recorded as sent and not refused counts (one that a kill left unanswered may have happened)."""
    recs = actions(run)
    failed = _failed(recs)
    out: dict[str, int] = {}
    for r in recs:
        if r.get("action") == "extend" and r.get("event") == "send" and r.get("assignments") and r["id"] not in failed:
            out[r["hit_id"]] = out.get(r["hit_id"], 0) + int(r["assignments"])
    return out


def bonus_cents(run: RunDir) -> int:
    """Bonuses and their fees sent with ``crowdprop bonus`` (recorded before each was sent; a
    refused one does not count). Bonuses of the round loop are in the spend table."""
    recs = actions(run)
    failed = _failed(recs)
    return sum(int(r.get("bonus_cents", 0)) + int(r.get("fee_cents", 0)) for r in recs
               if r.get("action") == "bonus" and r.get("event") == "send" and r["id"] not in failed)


# -------------------------------------------------------------------- bonuses of the round loop
def max_bonus_cents(per_gold_cents: int, n_gold: int) -> int:
    """The most one assignment's bonus can cost: every gold right, MTurk's fee included (0: no bonus)."""
    b = int(per_gold_cents) * int(n_gold)
    return b + FEES.bonus_fee_cents(b) if b > 0 else 0


def bonus_token(run: RunDir, assignment_id: str) -> str:
    """SendBonus's UniqueRequestToken of the gold bonus of ``assignment_id``: one per assignment."""
    import hashlib

    key = f"{run.campaign.get('campaign_id', '')}\x1f{run.nonce}\x1fgold-bonus\x1f{assignment_id}"
    return "b-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def journal_bonuses(run: RunDir, r: int) -> dict[str, dict]:
    """The gold bonus of each assignment journaled in round ``r`` (recorded before it is sent;
    ``sent``: MTurk took it)."""
    out: dict[str, dict] = {}
    for rec in run.journal_lines(r, "bonuses"):
        aid = rec.get("assignment_id")
        if aid is not None:
            out[aid] = {**out.get(aid, {}), **rec}
    return out


def journal_bonus_cents(run: RunDir, r: int) -> int:
    """Bonuses and their fees journaled in round ``r`` (each counts from its record on)."""
    return sum(int(x.get("bonus_cents", 0)) + int(x.get("fee_cents", 0)) for x in journal_bonuses(run, r).values())
