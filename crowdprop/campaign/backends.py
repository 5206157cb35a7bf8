"""The crowd of a run directory, as the campaign sees it: re-exports of :mod:`crowdprop.crowd` and the budget estimate.

The crowd itself lives in :mod:`crowdprop.crowd`: :mod:`~crowdprop.crowd.factory` (kind ->
backend), :mod:`~crowdprop.crowd.resume` (:class:`MTurkCrowd`), :mod:`~crowdprop.crowd.targets`
(where an MTurk crowd publishes) and :mod:`~crowdprop.crowd.qualification` (the qualification
test). The names below are kept here for one version; import them from :mod:`crowdprop.crowd`.
"""
from __future__ import annotations

from ..crowd.factory import (HIT_IMAGES, IMAGE_MODES, discard_stale_journal, local_client,  # noqa: F401
                             local_endpoint_backend, make_backend, mturk_backend, quiet_botocore, simulated_backend)
from ..crowd.qualification import (qualification_results, qualification_test,  # noqa: F401
                                   qualification_test_golds, truth_of)
from ..crowd.resume import MTurkCrowd, journal_rounds  # noqa: F401
from ..crowd.targets import (TARGETS, Target, crowd_kind, image_url_key, record_target,  # noqa: F401
                             resolve_target, started)
from .store import RunDir

_journal_rounds = journal_rounds
_quiet_botocore = quiet_botocore


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
