"""Test-time fine-tuning: the loss falls on a clip, and labels raise the whole clip's mIoU."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdprop.video import model as vmodel  # noqa: E402
from crowdprop.video.finetune import finetune, step_loss, warp_probs  # noqa: E402
from crowdprop.video.flow import clip_flows  # noqa: E402
from crowdprop.video.run import miou  # noqa: E402

pytestmark = pytest.mark.detect


@pytest.fixture(scope="module")
def flows(tiny_clip):
    return clip_flows(tiny_clip.frames)


def _loss_all_pairs(net, clip, labels, fwd, occ, lam=1.0):
    t = len(clip.frames)
    idx = torch.arange(t - 1)
    x = vmodel.to_tensor(clip.frames)
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        total, ce, cons = step_loss(net, torch.cat([x[idx], x[idx + 1]]), torch.cat([y[idx], y[idx + 1]]),
                                    torch.from_numpy(fwd), torch.from_numpy(~occ).float(), lam)
    return float(total), float(ce), float(cons)


def test_warp_probs_follows_the_flow():
    p = torch.zeros(1, 2, 6, 6)
    p[0, 1, 2, 3] = 1.0  # frame t+1 has class 1 at (y=2, x=3)
    flow = torch.zeros(1, 6, 6, 2)
    flow[..., 0] = 1.0  # everything moves one pixel right from t to t+1
    w = warp_probs(p, flow)
    assert w[0, 1, 2, 2] == pytest.approx(1.0) and float(w[0, 1].sum()) == pytest.approx(1.0)


def test_loss_falls_and_labels_raise_miou(tiny_clip, flows, checkpoint):
    torch.set_num_threads(1)
    fwd, _, occ, _ = flows
    k = 4
    base, _ = vmodel.load(checkpoint)
    m0 = miou(vmodel.predict(base, tiny_clip.frames, features=False).argmax(1), tiny_clip.labels, k)
    labels = np.full(tiny_clip.labels.shape, -1, np.int64)
    labels[[0, 3]] = tiny_clip.labels[[0, 3]]  # people labeled two of six frames
    net, _ = vmodel.load(checkpoint)
    before = _loss_all_pairs(net, tiny_clip, labels, fwd, occ)
    hist = finetune(net, tiny_clip.frames, labels, fwd, occ, steps=30, lr=3e-3, lam=1.0, pairs=2, seed=0, round_=1)
    after = _loss_all_pairs(net, tiny_clip, labels, fwd, occ)
    assert len(hist["loss"]) == 30
    assert after[0] < 0.6 * before[0], (before, after)
    m_lab = miou(vmodel.predict(net, tiny_clip.frames, features=False).argmax(1), tiny_clip.labels, k)
    # without labels (consistency alone) the network does not learn the classes
    free, _ = vmodel.load(checkpoint)
    finetune(free, tiny_clip.frames, np.full_like(labels, -1), fwd, occ, steps=30, lr=3e-3, lam=1.0, pairs=2,
             seed=0, round_=1)
    m_free = miou(vmodel.predict(free, tiny_clip.frames, features=False).argmax(1), tiny_clip.labels, k)
    assert m_lab > m0 + 0.1 and m_lab > m_free + 0.1, (m0, m_free, m_lab)
