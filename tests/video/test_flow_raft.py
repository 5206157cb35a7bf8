"""Flow choices: OpenCV Farneback and torchvision's RAFT (raft_small) with weights from a
checkpoint, untrained weights asked for by name, or none (one line, exit 2). An untrained RAFT's
flow is noise: these tests check the code path (shapes, scaling back from the upscaled frames,
the occlusion check on its output), not its accuracy."""
from __future__ import annotations

import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from crowdprop.video import flow as vflow  # noqa: E402
from crowdprop.video.flow import farneback_flow, load_raft, occlusion, raft_flow, warp  # noqa: E402

pytestmark = pytest.mark.detect


class ConstantFlow(torch.nn.Module):
    """Stands in for RAFT: the flow of a translation by ``d`` (px of the frames it is given)."""

    def __init__(self, d):
        super().__init__()
        self.d = d
        self.shapes: list[tuple] = []

    def forward(self, a, b):
        self.shapes.append(tuple(a.shape))
        f = torch.zeros(a.shape[0], 2, *a.shape[2:])
        f[:, 0], f[:, 1] = self.d
        return [f * 0.5, f]  # RAFT returns its refinements; the last one counts


def test_raft_wrapper_scales_small_frames_and_its_flow_warps_a_known_translation(shifted):
    a, b, d = shifted  # 32 x 32 px: RAFT needs 128, so the frames go in 4x larger
    fake = ConstantFlow((4 * d[0], 4 * d[1]))  # the flow RAFT would see at 4x
    f = raft_flow(fake, a[None], b[None])
    assert fake.shapes == [(1, 3, 128, 128)]
    assert f.shape == (1, 32, 32, 2) and f.dtype == np.float32
    assert np.allclose(f[0, ..., 0], d[0]) and np.allclose(f[0, ..., 1], d[1])  # scaled back to the frames' px
    back = warp(b.astype(np.float32), f[0])  # b brought into a's grid along RAFT's flow
    assert np.abs(back[:-3, :-3] - a[:-3, :-3]).max() < 1e-3
    bwd = raft_flow(ConstantFlow((-4 * d[0], -4 * d[1])), b[None], a[None])[0]
    occ = occlusion(f[0], bwd)  # what leaves the frame, exactly
    assert occ[:, 32 - 3:].all() and occ[32 - 2:, :].all() and not occ[:32 - 2, :32 - 3].any()


def test_farneback_flow_of_a_known_translation(shifted):
    a, b, d = shifted
    f = farneback_flow(a, b)
    inner = f[6:-8, 6:-8]
    assert np.abs(np.median(inner[..., 0]) - d[0]) < 0.5 and np.abs(np.median(inner[..., 1]) - d[1]) < 0.5


def test_untrained_raft_and_a_checkpoint_run_the_code_path(tmp_path, shifted):
    a, b, _ = shifted
    net = load_raft("untrained")
    f = raft_flow(net, np.stack([a, b]), np.stack([b, a]))
    assert f.shape == (2, 32, 32, 2) and np.isfinite(f).all()
    occ = occlusion(f[0], f[1])
    assert occ.shape == (32, 32) and occ.dtype == bool
    # a checkpoint the test saves (a state dict, or one under "state_dict") loads the same weights
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(123)
    other = raft_small(weights=None)
    torch.save(other.state_dict(), tmp_path / "raft.pt")
    torch.save({"state_dict": other.state_dict()}, tmp_path / "raft2.pt")
    for p in ("raft.pt", "raft2.pt"):
        loaded = load_raft(str(tmp_path / p))
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in net.state_dict().items())


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_raft_without_weights_is_one_line_exit_2(tmp_path, clip_dir, checkpoint, capsys, monkeypatch):
    from crowdprop.cli import main

    def offline():
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(vflow, "_raft_default_state", offline)
    cfg = tmp_path / "raft.toml"
    cfg.write_text('[video]\nflow = "raft"\n')
    argv = ["video", "init", str(tmp_path / "r"), "--frames", str(clip_dir / "frames"), "--labels",
            str(clip_dir / "labels.json"), "--gt", str(clip_dir / "gt"), "--model", str(checkpoint),
            "--config", str(cfg)]
    assert main(argv) == 2
    err = _err(capsys)
    assert "flow_weights" in err and "URLError" in err and "untrained" in err and not (tmp_path / "r").exists()
    cfg.write_text(f'[video]\nflow = "raft"\nflow_weights = "{tmp_path / "none.pt"}"\n')
    assert main(argv) == 2
    assert "none.pt" in (e := _err(capsys)) and "no such file" in e
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cfg.write_text(f'[video]\nflow = "raft"\nflow_weights = "{tmp_path / "junk.pt"}"\n')
    assert main(argv) == 2
    assert "not a RAFT checkpoint" in _err(capsys)
    cfg.write_text('[video]\nflow = "lucas"\n')
    assert main(argv) == 2
    assert "'flow'" in _err(capsys)


def test_init_with_untrained_raft_stores_flows_and_their_occlusion(tmp_path, clip_dir, checkpoint, tiny_clip):
    from crowdprop.video.run import VideoRun, init_video

    cfg = tmp_path / "raft.toml"
    cfg.write_text('[video]\nflow = "raft"\nflow_weights = "untrained"\nsuperpixel_px = 40\n')
    vr = init_video(tmp_path / "r", frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
                    gt=clip_dir / "gt", config=cfg)
    vr = VideoRun(vr.path).require()
    fl = vr.flows()
    t, h, w = tiny_clip.labels.shape
    assert fl["fwd"].shape == (t - 1, h, w, 2) and fl["occ_fwd"].shape == (t - 1, h, w)
    assert fl["occ_fwd"].dtype == bool and np.isfinite(fl["fwd"]).all()
    # the stored flows are RAFT's (untrained: the same random weights every time), the masks its occlusion check
    net = load_raft("untrained")
    f = raft_flow(net, tiny_clip.frames[:-1], tiny_clip.frames[1:])  # one batch, as init's one chunk
    fb = raft_flow(net, tiny_clip.frames[1:], tiny_clip.frames[:-1])
    assert np.array_equal(fl["fwd"], f.astype(np.float16).astype(np.float32))
    assert all(np.array_equal(fl["occ_fwd"][i], occlusion(f[i], fb[i])) for i in range(t - 1))
    assert vr.config.video.flow == "raft"
