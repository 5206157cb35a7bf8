"""Fixtures of the video tests: tiny synthetic clips and a small network pretrained on other clips.

torch is imported inside the fixtures, so tests that need no torch run without the detect extra.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")

FRAMES = 6
SIZE = 32


@pytest.fixture(scope="session")
def tiny_clip():
    from crowdprop.video.synth import make_clip

    return make_clip(np.random.default_rng([11, 3]), frames=FRAMES, size=SIZE)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, tiny_clip) -> Path:
    from crowdprop.video.synth import write_clip

    return write_clip(tiny_clip, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A network pretrained on pretrain-domain clips (none of them the test clip), saved."""
    pytest.importorskip("torch")
    import torch

    from crowdprop.video import model as vmodel

    torch.set_num_threads(1)
    ck = vmodel.pretrain(clips=6, steps=120, seed=5, frames=4, size=SIZE, width=32)
    path = tmp_path_factory.mktemp("model") / "net.pt"
    vmodel.save(ck, path)
    return path


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    p = tmp_path / "video.toml"
    p.write_text("[video]\nrounds = 2\nclicks_per_round = 12\nfinetune_steps = 6\ncheckpoint_every = 2\n"
                 "superpixel_px = 40\npatch = 8\n[crowd]\nquestions_per_hit = 8\ngolds_per_hit = 1\n"
                 "reward_usd = 0.05\n[simulation]\nworkers = 4\naccuracy = 1.0\naccuracy_spread = 0.0\n")
    return p


@pytest.fixture(scope="module")
def shifted(tiny_clip):
    """The clip's first frame and it translated by d = (3, 2) px: (a, b, d)."""
    import cv2

    a = tiny_clip.frames[0]
    d = (3.0, 2.0)  # b[x] = a[x - d], so a[x] is b[x + d]
    b = cv2.warpAffine(a, np.float32([[1, 0, d[0]], [0, 1, d[1]]]), a.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    return a, b, d
