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
from ..money import cents
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
    """Rewards, fees and bonuses paid in the committed rounds."""
    spend = run.read_rounds("spend") if spend is None else spend
    return int(spend_cents(spend).sum())


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
