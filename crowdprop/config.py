"""Campaign configuration: a TOML file with one table per section.

Every key has a default that reproduces the paper (Papadopoulos, Weber and
Torralba, ICCV 2021). Unknown keys, wrong types and out-of-range values are
refused with an :class:`~crowdprop.errors.InputError` naming the file, the table
and the key. The resolved configuration is stored in ``RUN_DIR/config.json`` so a
run directory always knows how it was started.

Example ``campaign.toml``::

    [campaign]
    seed = 7
    budget_usd = 25.0

    [policy]
    name = "sequential"      # paper | sequential
    sampling = "stratified"  # uniform | stratified

    [simulation]
    spammer_share = 0.2
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from .errors import InputError


class Section:
    """A table of the campaign TOML: a dataclass whose fields are its keys, checked by :meth:`validate`."""

    def validate(self, v: "_V") -> None:
        """Refuse out-of-range values with ``v.check`` (types are checked before)."""


@dataclass
class CampaignSection(Section):
    name: str = "crowdprop"
    seed: int = 0
    budget_usd: float = 1_000_000.0
    """Hard cap on rewards + bonuses + MTurk fees, in dollars."""
    max_rounds: int = 200
    manual_seconds_per_mask: float = 80.0
    """Time to draw one polygon by hand, for the speedup figure (paper: 80 s)."""
    correct_iou: float = 0.75
    """Replay: a mask is correct when its IoU with the best same-class GT is above this."""
    stop_below_share: float = 0.0
    """Stop at diminishing returns: once ``stop_patience`` rounds in a row that got answers each
    decided fewer than this share of the masks (0: off; 0.001 stops a 100,000-mask campaign
    after three rounds of under 100 masks each). Every HIT already out is still waited for and
    settled. Lower it, or set 0, in ``config.json`` and run again to go on."""
    stop_patience: int = 3

    def validate(self, v: "_V") -> None:
        v.check(self.budget_usd > 0, "budget_usd", "must be > 0")
        v.check(0.0 <= self.stop_below_share < 1.0, "stop_below_share", "must be in [0, 1)")
        v.check(self.stop_patience >= 1, "stop_patience", "must be >= 1")
        v.check(self.max_rounds >= 1, "max_rounds", "must be >= 1")
        v.check(self.manual_seconds_per_mask > 0, "manual_seconds_per_mask", "must be > 0")
        v.check(0.0 < self.correct_iou < 1.0, "correct_iou", "must be in (0, 1)")
        v.check(self.seed >= 0, "seed", "must be >= 0")


@dataclass
class PolicySection(Section):
    name: str = "paper"
    """``paper``: ask k masks per cluster at once; ``sequential``: ask in small
    batches and stop as soon as the interval clears a bar."""
    sampling: str = "uniform"
    """``uniform`` (paper) or ``stratified`` across the cluster's two children."""
    accept: float = 0.85
    reject: float = 0.15
    k: int = 15
    k_pa: float = 0.7
    """Clusters whose predicted quality is below this are split without asking."""
    min_cluster_size: int = 15
    """Clusters of at most this many masks are verified mask by mask."""
    low_quality: str = "skip"
    """What happens to a cluster below K_pa that is too small to split further:
    ``skip`` (paper: not worth asking about; its masks stay open) or ``verify``."""
    quality: str = "auto"
    """Predicted quality of a mask: ``score``, ``pred_iou``, ``score_x_pred_iou``,
    or ``auto``: sqrt(score x pred_iou) when the detector gave pred_iou (the same
    ranking as the product, on the scale K_pa is compared with), else score."""
    candidates_per_class: int = 64
    """At most this many clusters per class are asked about in one round (the target policy's
    small clusters, once its verifier is fitted, feed its per-mask pool beyond this)."""
    batch: int = 5
    """Sequential policy: masks asked per cluster per round."""
    credible: float = 0.95
    """Mass of the equal-tailed Beta posterior interval reported for each cluster."""
    confidence: float = 0.95
    """Sequential policy: stop a cluster once one of the paper rule's outcomes has at
    least this predictive probability."""
    prior_a: float = 1.0
    prior_b: float = 1.0
    target_precision: float = 0.90
    """Target policy: the accepted set's precision to hold, per class and overall."""
    target_confidence: float = 0.95
    """Target policy: confidence of that bound (one-sided); audits whose lower bound at this
    confidence falls under the target make the controller tighten the source."""
    risk_tolerance: float = 0.01
    """Target policy: a cluster is accepted once the expected shortfall of its precision
    under the target, times its size, is at most this share of its size (of
    ``risk_size_cap`` masks for larger clusters: a fixed number of masks, so a cluster of
    100,000 needs far more answers than one of 100)."""
    risk_size_cap: int = 2000
    accept_floor: float = 0.80
    """Target policy: a cluster of at most ``risk_size_cap`` masks that its own answers cannot
    certify is still accepted when its class's accepted set, with it, keeps a lower bound over
    the target at ``target_confidence`` (the surplus of purer masks pays for it) and its own
    estimated precision is at least this. 1.0 turns set-level acceptance off."""
    audit_share: float = 0.10
    """Share of non-gold questions spent on audits (every policy): uniform samples of
    what was decided without a direct answer, from which precision is reported."""
    audit_min: int = 3
    """Audits drawn at least from every non-empty stratum of a round."""
    verifier: bool = True
    """Target policy: fit the verifier after each round and use it (ranking, settling
    masks one by one, active questions)."""
    verifier_min_answers: int = 100
    """Answered masks needed before the verifier is fitted."""
    verifier_settle_after: int = 100
    """Answers to the verifier's own questions (active and random, on single masks) needed
    before it settles any mask. Until then it has learned from cluster samples only, not from
    the masks of the small clusters it would settle: at 1M masks a verifier fitted on round
    1's cluster samples accepted tens of thousands of masks in round 2 at a true precision of
    0.27-0.58. At most 5 % of the masks (a small set asks few such questions). 0 lets it
    settle as soon as it is fitted."""
    verifier_margin: float = 0.02
    """The verifier accepts a mask when its calibrated probability is at least
    target_precision + this margin (audits raise it when the verifier falls short)."""
    verifier_reject: float = 0.10
    """The verifier rejects a mask when its calibrated probability is at most this."""
    verifier_scope: str = "small"
    """Which unanswered masks the verifier may settle: ``all`` open masks (inside large
    clusters too: their cluster is then decided on the masks left), or ``small``: only
    members of clusters too small to split."""
    active_share: float = 0.5
    """Target policy with a fitted verifier: each round asks about this share of the masks
    that small clusters leave unsettled, chosen for uncertainty and diversity."""
    random_share: float = 0.1
    """Of those questions, this share is uniform at random over open masks (calibration)."""

    def validate(self, v: "_V") -> None:
        v.check(self.name in ("paper", "sequential", "target"), "name", "must be 'paper', 'sequential' or 'target'")
        v.check(self.sampling in ("uniform", "stratified"), "sampling", "must be 'uniform' or 'stratified'")
        v.check(0.0 < self.accept <= 1.0, "accept", "must be in (0, 1]")
        v.check(0.0 <= self.reject < 1.0, "reject", "must be in [0, 1)")
        v.check(self.reject < self.accept, "reject", "must be below accept")
        v.check(self.k >= 1, "k", "must be >= 1")
        v.check(0.0 <= self.k_pa <= 1.0, "k_pa", "must be in [0, 1]")
        v.check(self.min_cluster_size >= 1, "min_cluster_size", "must be >= 1")
        v.check(self.low_quality in ("skip", "verify"), "low_quality", "must be 'skip' or 'verify'")
        v.check(self.quality in ("auto", "score", "pred_iou", "score_x_pred_iou"), "quality",
                "must be auto, score, pred_iou or score_x_pred_iou")
        v.check(self.candidates_per_class >= 1, "candidates_per_class", "must be >= 1")
        v.check(1 <= self.batch <= self.k, "batch", "must be in [1, k]")
        v.check(0.5 <= self.credible < 1.0, "credible", "must be in [0.5, 1)")
        v.check(0.5 < self.confidence <= 1.0, "confidence", "must be in (0.5, 1]")
        v.check(self.prior_a > 0 and self.prior_b > 0, "prior_a", "Beta prior parameters must be > 0")
        v.check(0.5 <= self.target_precision < 1.0, "target_precision", "must be in [0.5, 1)")
        v.check(0.5 <= self.target_confidence < 1.0, "target_confidence", "must be in [0.5, 1)")
        v.check(0 < self.risk_tolerance < 0.5, "risk_tolerance", "must be in (0, 0.5)")
        v.check(self.risk_size_cap >= 1, "risk_size_cap", "must be >= 1")
        v.check(0.0 <= self.audit_share < 1.0, "audit_share", "must be in [0, 1)")
        v.check(self.audit_min >= 0, "audit_min", "must be >= 0")
        v.check(self.verifier_min_answers >= 10, "verifier_min_answers", "must be >= 10")
        v.check(self.verifier_settle_after >= 0, "verifier_settle_after", "must be >= 0")
        v.check(0.0 <= self.verifier_margin < 0.5, "verifier_margin", "must be in [0, 0.5)")
        v.check(0.0 <= self.verifier_reject < 0.5, "verifier_reject", "must be in [0, 0.5)")
        v.check(0.5 <= self.accept_floor <= 1.0, "accept_floor", "must be in [0.5, 1]")
        v.check(self.verifier_scope in ("all", "small"), "verifier_scope", "must be 'all' or 'small'")
        v.check(0.0 < self.active_share <= 1.0, "active_share", "must be in (0, 1]")
        v.check(0.0 <= self.random_share < 1.0, "random_share", "must be in [0, 1)")


@dataclass
class CrowdSection(Section):
    questions_per_hit: int = 50
    """Questions in one HIT, golds included."""
    golds_per_hit: int = 5
    assignments_per_hit: int = 1
    """Workers per HIT (1 = the paper). MTurk doubles its fee at 10, so at most 9."""
    reward_usd: float = 0.20
    """Reward per assignment (one worker doing one HIT)."""
    seconds_per_question: float = 1.4
    poll_interval_s: float = 30.0
    """Seconds between polls for submitted work (real crowds)."""
    round_timeout_s: float = 86400.0
    """A round stops waiting after this long; unanswered HITs expire and their
    questions are asked again in the next round."""
    bonus_cents_per_gold_correct: int = 0
    """A bonus in cents for each gold question answered right, paid once per approved
    assignment (SendBonus with a UniqueRequestToken) and counted against the budget."""

    def validate(self, v: "_V") -> None:
        v.check(self.poll_interval_s >= 0, "poll_interval_s", "must be >= 0")
        v.check(self.round_timeout_s > 0, "round_timeout_s", "must be > 0")
        v.check(1 <= self.questions_per_hit <= 500, "questions_per_hit", "must be in [1, 500]")
        v.check(0 <= self.golds_per_hit < self.questions_per_hit, "golds_per_hit", "must be in [0, questions_per_hit)")
        v.check(1 <= self.assignments_per_hit <= 9, "assignments_per_hit", "must be in [1, 9] (MTurk fees double at 10)")
        v.check(0.01 <= self.reward_usd <= 100.0, "reward_usd", "must be in [0.01, 100]")
        v.check(self.seconds_per_question > 0, "seconds_per_question", "must be > 0")
        v.check(0 <= self.bonus_cents_per_gold_correct <= 10000, "bonus_cents_per_gold_correct",
                "must be in [0, 10000] (integer cents)")


@dataclass
class SimulationSection(Section):
    """The simulated crowd of a replay: answers from ground truth."""

    workers: int = 25
    accuracy: float = 0.95
    """Mean accuracy of ordinary workers."""
    accuracy_spread: float = 0.03
    spammer_share: float = 0.0
    """Share of workers who answer at random."""
    sloppy_share: float = 0.0
    sloppy_accuracy: float = 0.75
    seconds_per_question: float = 1.4

    def validate(self, v: "_V") -> None:
        v.check(self.workers >= 1, "workers", "must be >= 1")
        v.check(0.5 <= self.accuracy <= 1.0, "accuracy", "must be in [0.5, 1]")
        v.check(0.0 <= self.accuracy_spread <= 0.5, "accuracy_spread", "must be in [0, 0.5]")
        v.check(0.0 <= self.spammer_share <= 1.0, "spammer_share", "must be in [0, 1]")
        v.check(0.0 <= self.sloppy_share <= 1.0, "sloppy_share", "must be in [0, 1]")
        v.check(self.spammer_share + self.sloppy_share <= 1.0, "sloppy_share", "spammer_share + sloppy_share must be <= 1")
        v.check(0.0 <= self.sloppy_accuracy <= 1.0, "sloppy_accuracy", "must be in [0, 1]")
        v.check(self.seconds_per_question > 0, "seconds_per_question", "must be > 0")


@dataclass
class FeaturesSection(Section):
    grid: int = 16
    """Built-in featurizer: the mask cropped to its box is resized to grid x grid."""
    quality_weight: float = 1.0
    """Weight of the predicted-quality distance against the normalized feature distance."""
    pca_dims: int = 64
    """Features are reduced to this many dimensions (PCA) before clustering; 0 keeps all."""

    def validate(self, v: "_V") -> None:
        v.check(4 <= self.grid <= 64, "grid", "must be in [4, 64]")
        v.check(self.quality_weight >= 0, "quality_weight", "must be >= 0")
        v.check(self.pca_dims >= 0, "pca_dims", "must be >= 0")


@dataclass
class TreeSection(Section):
    exact_max: int = 4000
    """Classes up to this size get exact complete linkage; larger ones the scalable build."""
    micro_size: int = 256
    """Scalable build: target size of the micro-clusters that get exact linkage."""

    def validate(self, v: "_V") -> None:
        v.check(2 <= self.exact_max <= 10_000, "exact_max",
                "must be in [2, 10000] (exact linkage keeps n^2/2 distances: 10000 is 400 MB)")
        v.check(2 <= self.micro_size <= self.exact_max, "micro_size", "must be in [2, exact_max]")


@dataclass
class QualitySection(Section):
    """The ``[quality]`` table: quality control (the rules are in :mod:`crowdprop.quality.rules`)."""

    min_gold_accuracy: float = 0.6
    """An assignment is approved when at least this share of its golds is right."""
    min_seconds_per_question: float = 0.3
    """An assignment faster than this per question (golds included) is rejected."""
    soft_block_after: int = 2
    """A worker with this many failed (rejected) assignments is blocked."""
    hard_block: bool = False
    """``False``: block through a qualification the worker no longer meets (soft,
    reversible, invisible to their reputation). ``True``: MTurk CreateWorkerBlock."""
    qualification_size: int = 10
    """Golds in the qualification test a worker takes before the first HIT (0: no test)."""
    qualification_pass: float = 0.9
    """Share of the qualification golds a worker must get right. At 0.9 of 10, a
    95 %-accurate worker passes 91 % of the time, a 75 % one 24 %, a spammer 1 %."""
    block_below_accuracy: float = 0.8
    """A worker is also blocked once the upper end of the 95 % Beta interval of their
    gold accuracy, over all their work so far, falls below this (0 turns it off):
    a spammer at 50 % is caught after 2-3 HITs of 5 golds even when luck gets single
    HITs approved."""
    aggregation: str = "raw"
    """How answers become a per-mask probability of being correct: ``raw`` (share
    of yes answers in approved work: the paper's rule), ``onecoin`` (Dawid-Skene
    EM, one accuracy per worker, golds clamped; use it with assignments_per_hit > 1),
    ``ds`` (full confusion matrices) or ``mv`` (majority vote)."""

    def validate(self, v: "_V") -> None:
        v.check(0.0 <= self.min_gold_accuracy <= 1.0, "min_gold_accuracy", "must be in [0, 1]")
        v.check(self.min_seconds_per_question >= 0, "min_seconds_per_question", "must be >= 0")
        v.check(self.soft_block_after >= 1, "soft_block_after", "must be >= 1")
        v.check(0 <= self.qualification_size <= 100, "qualification_size", "must be in [0, 100]")
        v.check(0.0 <= self.qualification_pass <= 1.0, "qualification_pass", "must be in [0, 1]")
        v.check(0.0 <= self.block_below_accuracy <= 1.0, "block_below_accuracy", "must be in [0, 1]")
        v.check(self.aggregation in ("onecoin", "ds", "mv", "raw"), "aggregation", "must be onecoin, ds, mv or raw")


MIN_AUTO_APPROVAL_S = 3600
"""The least ``[mturk] auto_approval_delay_s``: an hour to review work before MTurk approves it on
its own (crowdprop polls every ``[crowd] poll_interval_s`` and settles what it receives at once)."""


@dataclass
class MTurkSection(Section):
    """The ``[mturk]`` table: HITs on MTurk (the backend is :mod:`crowdprop.crowd.mturk`).

    The reward per assignment and the assignments per HIT are in ``[crowd]``
    (``reward_usd``, ``assignments_per_hit``); the budget cap in ``[campaign]``.
    """

    title: str = "Is the colored region a correct outline of the object? (quick yes/no)"
    description: str = ("Look at each highlighted region and answer Yes if it outlines the named "
                        "object correctly, No otherwise. Keyboard: Y / N.")
    keywords: str = "image, segmentation, outline, yes/no, quick, keyboard"
    assignment_duration_s: int = 1800
    lifetime_s: int = 3 * 86400
    """How long a HIT stays available to workers (also the lifetime of presigned image URLs)."""
    auto_approval_delay_s: int = 3 * 86400
    """MTurk approves (and pays) submitted work on its own this long after submission, reviewed or
    not; at least :data:`MIN_AUTO_APPROVAL_S`."""
    qualifications: str = "auto"
    """``auto``: the thresholds below in production, none in the sandbox and on a
    local endpoint; ``always``; ``none``."""
    min_percent_approved: int = 95
    """PercentAssignmentsApproved >= this (production default)."""
    min_hits_approved: int = 100
    """NumberHITsApproved >= this (production default)."""
    locale: list[str] = field(default_factory=list)
    """ISO 3166 country codes workers must be in (e.g. ``["US", "CA"]``); empty: anywhere."""
    image_base_url: str = ""
    """Images are written to a local folder that you serve at this URL (https for MTurk)."""
    s3_bucket: str = ""
    """Images are uploaded to this bucket and shown through presigned GET URLs (which carry the
    access key id, and with temporary credentials the session token; never the secret key)."""
    s3_prefix: str = "crowdprop/"
    s3_public: bool = False
    """With ``s3_bucket``: workers fetch the pictures through plain URLs under ``s3_prefix``, a
    prefix that you make publicly readable (bucket policy), each named by a keyed hash of
    the picture that nobody can guess; no URL carries anything of the credentials."""
    region: str = "us-east-1"
    frame_height: int = 0
    """HTMLQuestion FrameHeight in pixels (0: the full worker window)."""
    test_duration_s: int = 1800
    """TestDurationInSeconds of the campaign's qualification test (``[quality] qualification_size``)."""

    def validate(self, v: "_V") -> None:
        for key in ("title", "description"):
            v.check(0 < len(getattr(self, key)) <= 2000, key, "must be 1 to 2000 characters")
        v.check(len(self.keywords) <= 1000, "keywords", "must be at most 1000 characters")
        v.check(30 <= self.assignment_duration_s <= 365 * 86400, "assignment_duration_s",
                "must be in [30, 31536000] seconds")
        v.check(30 <= self.lifetime_s <= 365 * 86400, "lifetime_s", "must be in [30, 31536000] seconds")
        v.check(MIN_AUTO_APPROVAL_S <= self.auto_approval_delay_s <= 30 * 86400, "auto_approval_delay_s",
                f"must be in [{MIN_AUTO_APPROVAL_S}, 2592000] seconds: MTurk approves and pays submitted work on "
                "its own after this delay, so it must leave time to review the work")
        v.check(self.qualifications in ("auto", "always", "none"), "qualifications",
                "must be 'auto', 'always' or 'none'")
        v.check(0 <= self.min_percent_approved <= 100, "min_percent_approved", "must be in [0, 100]")
        v.check(self.min_hits_approved >= 0, "min_hits_approved", "must be >= 0")
        v.check(all(isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c) for c in self.locale), "locale",
                "must be a list of two-letter upper-case country codes, e.g. [\"US\", \"CA\"]")
        v.check(self.image_base_url == "" or re.match(r"https?://", self.image_base_url) is not None,
                "image_base_url", "must start with https:// (or http:// for a local endpoint)")
        v.check(self.s3_bucket == "" or re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", self.s3_bucket) is not None,
                "s3_bucket", "is not a valid S3 bucket name")
        v.check(not (self.s3_bucket and self.image_base_url), "image_base_url",
                "set either image_base_url or s3_bucket, not both")
        v.check(not self.s3_bucket or self.s3_public or self.lifetime_s <= 7 * 86400, "lifetime_s",
                "must be at most 7 days with s3_bucket (presigned URLs last at most 7 days; "
                "s3_public = true has no such limit)")
        v.check(not self.s3_public or bool(self.s3_bucket), "s3_public", "applies to s3_bucket only: set s3_bucket")
        v.check(re.fullmatch(r"[a-z]{2}-[a-z]+-\d", self.region) is not None, "region",
                "must be an AWS region such as us-east-1")
        v.check(0 <= self.frame_height <= 10000, "frame_height", "must be in [0, 10000]")
        v.check(30 <= self.test_duration_s <= 365 * 86400, "test_duration_s", "must be in [30, 31536000] seconds")


@dataclass
class Config:
    """The whole configuration, every section resolved: what ``RUN_DIR/config.json`` holds."""

    campaign: CampaignSection = field(default_factory=CampaignSection)
    policy: PolicySection = field(default_factory=PolicySection)
    crowd: CrowdSection = field(default_factory=CrowdSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    tree: TreeSection = field(default_factory=TreeSection)
    quality: QualitySection = field(default_factory=QualitySection)
    mturk: MTurkSection = field(default_factory=MTurkSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Every key of every section, defaults included: a run directory resumes with the values it
        started with whatever the defaults of the installed version are."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS: dict[str, type[Section]] = get_type_hints(Config)
"""The section class of each table, by name (the fields of :class:`Config`)."""


class _V:
    def __init__(self, source: str, section: str):
        self.source = source
        self.section = section

    def check(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            raise InputError(self.source, f"[{self.section}]", key, message)


S = TypeVar("S", bound=Section)


def _type_ok(t: Any, value: Any) -> bool:
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, float) and math.isfinite(value)
    if get_origin(t) is list:
        (item,) = get_args(t)
        return isinstance(value, list) and all(_type_ok(item, x) for x in value)
    return isinstance(value, t)


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) if get_origin(t) is None else str(t)  # type: ignore[return-value]


def section_from_dict(cls: type[S], data: dict[str, Any], source: str, name: str) -> S:
    """The section ``cls`` from the table ``data`` (missing keys take their defaults), checked:
    an unknown key, a value of the wrong type or out of range is an :class:`InputError` naming
    ``source``, ``[name]`` and the key."""
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise InputError(source, f"[{name}]", key, f"unknown key (known: {', '.join(sorted(hints))})")
        t = hints[key]
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _type_ok(t, value):
            raise InputError(source, f"[{name}]", key, f"expected {_type_name(t)}, got {value!r}")
        kwargs[key] = value
    obj = cls(**kwargs)
    obj.validate(_V(source, name))
    return obj


def sections_from_dict(classes: dict[str, type[Section]], data: Any, source: str) -> dict[str, Section]:
    """Each table of ``data`` (a TOML file's or a config.json's) as its section of ``classes``,
    checked (:func:`section_from_dict`); an unknown table is an :class:`InputError`."""
    if not isinstance(data, dict):
        raise InputError(source, None, None, "expected a table of sections")
    sections = {}
    for name, table in data.items():
        if name not in classes:
            raise InputError(source, f"[{name}]", None, f"unknown section (known: {', '.join(sorted(classes))})")
        if not isinstance(table, dict):
            raise InputError(source, f"[{name}]", None, "expected a table")
        sections[name] = section_from_dict(classes[name], table, source, name)
    return sections


def from_dict(data: Any, source: str = "<config>") -> Config:
    """The configuration from its tables (a TOML file's or config.json's); absent sections and keys
    take their defaults."""
    sections = sections_from_dict(SECTIONS, data, source)
    for name, cls in SECTIONS.items():
        if name not in sections:
            sections[name] = section_from_dict(cls, {}, source, name)
    return Config(**sections)  # type: ignore[arg-type]


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The tables of a TOML file; a missing, malformed or non-UTF-8 file is an :class:`InputError`."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(p, None, None, "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(p, None, None, f"malformed TOML: {e}") from None
    except UnicodeDecodeError:
        raise InputError(p, None, None, "not UTF-8 text") from None


def load(path: str | os.PathLike | None) -> Config:
    """Read a campaign TOML file (or return the defaults for ``None``)."""
    if path is None:
        return from_dict({})
    return from_dict(read_toml(path), str(path))


def load_json(path: str | os.PathLike) -> Config:
    """Read the resolved configuration stored in a run directory (``RUN_DIR/config.json``)."""
    with open(path, "rb") as f:
        return from_dict(json.load(f), str(path))
