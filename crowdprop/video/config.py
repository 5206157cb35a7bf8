"""The video workflow's configuration: ``[video]`` plus the image workflow's ``[campaign]``,
``[crowd]``, ``[quality]``, ``[simulation]`` and ``[mturk]`` tables (same keys, same checks, same
defaults, but for ``[mturk]``'s title, description and keywords, which describe the video question).

A TOML file's unknown table or key, a wrong type or an out-of-range value is one line naming
the file, the table and the key (exit code 2). ``crowdprop video init`` writes every key to
``RUN_DIR/config.json``; later commands read only that file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (CampaignSection, CrowdSection, MTurkSection, QualitySection, Section, SimulationSection, _V,
                      read_toml, sections_from_dict)
from .select import METHODS
from .units import KINDS


@dataclass
class VideoSection(Section):
    granularity: str = "superpixel"
    """Units asked about: ``frame`` (its superpixels as a batch), ``patch`` or ``superpixel``."""
    method: str = "active"
    """``active`` (uncertain half, k-means, nearest to each centre), ``uncertainty``, ``random``, or
    ``keyframe`` (whole frames spread over the clip, labels carried along the flow, no fine-tuning)."""
    patch: int = 16
    """Side of a patch unit, pixels."""
    superpixel_px: int = 25
    """Mean pixels of a SLIC superpixel (``n_segments = H * W / superpixel_px``); the superpixel is
    also the click model's unit of labeling by hand."""
    mixed_below: float = 0.8
    """A careful worker answers "mixed" when no class covers this share of the unit."""
    uncertainty: str = "entropy"
    """``entropy`` (mean pixel entropy) or ``margin`` (mean 1 - (p1 - p2))."""
    clicks_per_round: int = 60
    """Clicks bought per round (units of a granularity cost their expected clicks)."""
    rounds: int = 5
    finetune_steps: int = 30
    finetune_lr: float = 0.001
    finetune_from: str = "base"
    """Each round fine-tunes ``base`` (the network the campaign started from) on every label so far,
    or the ``previous`` round's network."""
    finetune_pairs: int = 2
    """Neighbouring frame pairs per fine-tuning step."""
    balanced: bool = False
    """Weigh the cross-entropy by inverse class frequency of the labeled pixels."""
    anchor: float = 0.3
    """Weight of a third term: cross-entropy against the starting network's probabilities on
    unlabeled pixels (keeps the classes people labeled little; 0 = the paper's two-term loss)."""
    consistency: float = 1.0
    """Weight of the flow-consistency term."""
    checkpoint_every: int = 10
    """Fine-tuning steps between checkpoints in the round's journal (resume point)."""
    threads: int = 1
    """torch threads."""
    flow: str = "dis"
    """Optical flow between neighbouring frames: ``dis`` or ``farneback`` (OpenCV, no weights) or
    ``raft`` (torchvision's ``raft_small``)."""
    flow_weights: str = ""
    """RAFT's weights: ``""`` torchvision's pretrained ones (needs internet or torch's cache), a
    checkpoint path, or ``"untrained"`` (random: runs the code path, its flow is noise)."""
    chunk_frames: int = 64
    """Frames per stored chunk (frames, unit maps, flows, label maps) and per task of ``--engine``;
    a multiple of 8 (the inference batch), so results do not depend on it."""
    vote: str = "fixed"
    """``fixed``: every region answered by ``[crowd] assignments_per_hit`` workers. ``adaptive``:
    after those answers, a region is asked again, one more worker at a time, while its answers
    disagree or its only answer comes from a worker whose gold accuracy is under ``vote_trust``,
    up to ``vote_max`` answers (on MTurk its HIT gets one more assignment)."""
    vote_max: int = 3
    """Most answers per region with ``vote = "adaptive"``."""
    vote_trust: float = 0.9
    """A lone answer stands when its worker's gold accuracy, (right + 1) / (golds + 2) over every
    gold they answered, is at least this."""

    def validate(self, v: _V) -> None:
        v.check(self.granularity in KINDS, "granularity", f"must be one of {', '.join(KINDS)}")
        v.check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}")
        v.check(self.patch >= 2, "patch", "must be >= 2")
        v.check(4 <= self.superpixel_px <= 1_000_000, "superpixel_px", "must be in [4, 1000000]")
        v.check(0.5 < self.mixed_below <= 1.0, "mixed_below", "must be in (0.5, 1]")
        v.check(self.uncertainty in ("entropy", "margin"), "uncertainty", "must be entropy or margin")
        v.check(self.clicks_per_round >= 1, "clicks_per_round", "must be >= 1")
        v.check(1 <= self.rounds <= 1000, "rounds", "must be in [1, 1000]")
        v.check(self.finetune_steps >= 0, "finetune_steps", "must be >= 0")
        v.check(0 < self.finetune_lr < 1, "finetune_lr", "must be in (0, 1)")
        v.check(self.finetune_from in ("base", "previous"), "finetune_from", "must be base or previous")
        v.check(self.finetune_pairs >= 1, "finetune_pairs", "must be >= 1")
        v.check(self.consistency >= 0, "consistency", "must be >= 0")
        v.check(self.anchor >= 0, "anchor", "must be >= 0")
        v.check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        v.check(1 <= self.threads <= 256, "threads", "must be in [1, 256]")
        v.check(self.flow in ("dis", "farneback", "raft"), "flow", "must be dis, farneback or raft")
        v.check(self.chunk_frames >= 8 and self.chunk_frames % 8 == 0, "chunk_frames",
                "must be a multiple of 8 (the inference batch), >= 8")
        v.check(self.vote in ("fixed", "adaptive"), "vote", "must be fixed or adaptive")
        v.check(1 <= self.vote_max <= 9, "vote_max", "must be in [1, 9]")
        v.check(0.0 <= self.vote_trust <= 1.0, "vote_trust", "must be in [0, 1]")


MTURK_DEFAULTS: dict[str, Any] = {
    "title": "Which class is the highlighted region of a video frame? (quick, keys 1-9)",
    "description": ("Look at each highlighted region of a video frame and choose the class that covers it, "
                    "or 'mixed' when no single class does. Keyboard: 1-9, 0 for mixed."),
    "keywords": "video, segmentation, label, class, quick, keyboard",
}
"""``[mturk]`` keys whose image-workflow defaults describe the yes/no question."""


@dataclass
class VideoConfig:
    campaign: CampaignSection = field(default_factory=CampaignSection)
    video: VideoSection = field(default_factory=VideoSection)
    crowd: CrowdSection = field(default_factory=CrowdSection)
    quality: QualitySection = field(default_factory=QualitySection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    mturk: MTurkSection = field(default_factory=lambda: MTurkSection(**MTURK_DEFAULTS))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


SECTIONS: dict[str, type[Section]] = {"campaign": CampaignSection, "video": VideoSection, "crowd": CrowdSection,
                                      "quality": QualitySection, "simulation": SimulationSection,
                                      "mturk": MTurkSection}


def from_dict(data: Any, source: str) -> VideoConfig:
    if isinstance(data, dict) and isinstance(data.get("mturk", {}), dict):
        data = dict(data, mturk={**MTURK_DEFAULTS, **data.get("mturk", {})})
    cfg = VideoConfig()
    for name, section in sections_from_dict(SECTIONS, data, source).items():
        setattr(cfg, name, section)
    return cfg


def load(path: str | os.PathLike | None, overrides: dict | None = None) -> VideoConfig:
    """A TOML file (``None``: the defaults), with ``overrides`` ``{section: {key: value}}`` on top."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        data = read_toml(p)
    for sec, kv in (overrides or {}).items():
        data.setdefault(sec, {})
        if isinstance(data[sec], dict):
            data[sec].update(kv)
    return from_dict(data, source)


def load_json(path: str | os.PathLike) -> VideoConfig:
    with open(path, "rb") as f:
        return from_dict(json.load(f), str(path))
