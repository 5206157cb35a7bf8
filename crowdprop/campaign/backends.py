"""The budget estimate of a run directory's crowd, and the crowd names older callers import from here.

The crowd lives in :mod:`crowdprop.crowd`: :mod:`~crowdprop.crowd.factory` (kind -> backend),
:mod:`~crowdprop.crowd.resume` (:class:`MTurkCrowd`), :mod:`~crowdprop.crowd.targets` (where an
MTurk crowd publishes) and :mod:`~crowdprop.crowd.qualification` (the qualification test); crowdprop's
own code imports from there. The names re-exported below are those the test suite, the benchmarks
and ``notebooks/tune_policy.ipynb`` still import from this module (fifteen files); import new uses
from :mod:`crowdprop.crowd`.
"""
from __future__ import annotations

from ..crowd.factory import local_client, local_endpoint_backend, make_backend, mturk_backend, simulated_backend
from ..crowd.resume import MTurkCrowd
from ..crowd.targets import record_target, resolve_target
from .store import RunDir

__all__ = ["MTurkCrowd", "hit_cost_estimate", "local_client", "local_endpoint_backend", "make_backend",
           "mturk_backend", "record_target", "resolve_target", "simulated_backend"]


def hit_cost_estimate(run: RunDir) -> dict:
    """What the remaining budget buys: ``remaining_usd``, ``spent_usd``, ``hit_usd``, ``hits``.

    ``hit_usd`` is the most one full HIT can cost (every assignment approved,
    MTurk's fee included); ``hits`` how many of those the remaining budget pays.
    Computed in cents (:mod:`.ledger`); dollars are the view.
    """
    from ..hits.batching import reward_cents_for
    from ..money import cap_cents, usd
    from .ledger import FEES, spent_cents

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
