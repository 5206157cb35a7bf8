"""Optical flow between neighbouring frames, warping, and the forward-backward occlusion check.

Convention: ``flow_ab`` has shape ``(H, W, 2)`` (dx, dy) and says where pixel ``x`` of frame
``a`` is in frame ``b``: ``a[x] ~ b[x + flow_ab[x]]``. :func:`warp` samples ``b`` at
``x + flow_ab[x]``, which brings ``b`` into ``a``'s pixel grid. A pixel of ``a`` is *occluded*
(not visible in ``b``, or its flow unreliable) when going there and back does not come home
(Sundaram, Brox and Keutzer, ECCV 2010):

    |f_ab(x) + f_ba(x + f_ab(x))|^2 > alpha (|f_ab(x)|^2 + |f_ba(x + f_ab(x))|^2) + beta

or when ``x + f_ab(x)`` leaves the frame. Flow (``[video] flow``): OpenCV's DIS (the default) or
Farneback (no weights, CPU), or torchvision's RAFT (``raft_small``) with its weights from torchvision
(where there is internet or torch's cache holds them), a checkpoint (``flow_weights = PATH``), or,
asked for by name, untrained (``flow_weights = "untrained"``: only to exercise the code path).
"""
from __future__ import annotations

import numpy as np

ALPHA = 0.01
BETA = 0.5


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 (H, W, 2) flow from frame ``a`` to frame ``b`` (uint8 RGB or grey), OpenCV DIS."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]  # not in the stubs
    # small frames: small patches and a coarse-to-fine pyramid that still fits
    dis.setPatchSize(8)
    dis.setPatchStride(3)
    return dis.calc(_gray(a), _gray(b), None).astype(np.float32)


def farneback_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 (H, W, 2) flow from ``a`` to ``b``, OpenCV Farneback."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None, 0.5, 3, 9, 3, 5, 1.1, 0)  # type: ignore[call-overload]
    return np.asarray(flow, np.float32)


FLOWS = ("dis", "farneback", "raft")
RAFT_MIN = 128
"""RAFT's correlation pyramid needs frames of at least 128 px a side: smaller ones are scaled up
by a whole factor (and their flow scaled back down)."""


def _raft_default_state():
    """torchvision's pretrained ``raft_small`` weights (downloaded once into torch's cache)."""
    from torchvision.models.optical_flow import Raft_Small_Weights

    return Raft_Small_Weights.DEFAULT.get_state_dict(progress=False)


def load_raft(weights: str, *, where: str = "[video] flow_weights"):
    """torchvision's ``raft_small`` in eval mode. ``weights``: ``""`` torchvision's pretrained
    weights, ``"untrained"`` none (random, seeded), or a checkpoint path (a state dict, or a dict
    with ``state_dict``). No weights to be had is one line naming the key (exit code 2)."""
    import torch
    from torchvision.models.optical_flow import raft_small

    from ..errors import InputError

    torch.manual_seed(0)  # "untrained": the same random weights every time
    model = raft_small(weights=None)
    if weights == "untrained":
        pass
    elif weights:
        try:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InputError(weights, None, where, "no such file") from None
        except Exception as e:
            raise InputError(weights, None, where, f"not a RAFT checkpoint ({type(e).__name__})") from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        try:
            model.load_state_dict(sd)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise InputError(weights, None, where, "not raft_small's weights: "
                             + (str(e).splitlines() or [type(e).__name__])[0]) from None
    else:
        try:
            sd = _raft_default_state()
        except Exception as e:  # no internet and nothing cached: URLError, OSError, ...
            raise InputError(where, None, None, f"raft_small's pretrained weights could not be fetched "
                             f"({type(e).__name__}); set flow_weights to a checkpoint path, or \"untrained\" "
                             "to run the code path without weights, or use flow = \"dis\"") from None
        model.load_state_dict(sd)
    return model.eval()


def raft_flow(model, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 (N, H, W, 2) flow from frames ``a`` to ``b`` (uint8 (N, H, W, 3)) by RAFT."""
    import torch
    import torch.nn.functional as F

    n, h, w = a.shape[:3]
    k = max(1, -(-RAFT_MIN // min(h, w)))
    hh, ww = -(-h * k // 8) * 8, -(-w * k // 8) * 8

    def prep(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if k > 1:
            t = F.interpolate(t, scale_factor=k, mode="bilinear", align_corners=False)
        return F.pad(t, (0, ww - w * k, 0, hh - h * k), mode="replicate")

    with torch.no_grad():
        f = model(prep(a), prep(b))[-1][:, :, :h * k, :w * k]
        if k > 1:
            f = F.avg_pool2d(f, k) / k
    return f.permute(0, 2, 3, 1).numpy().astype(np.float32)


def pair_flows(frames: np.ndarray, method: str = "dis", raft=None) -> tuple[np.ndarray, np.ndarray]:
    """fwd[t] (t -> t+1) and bwd[t] (t+1 -> t), float32 (T-1, H, W, 2), for a block of frames."""
    t = len(frames)
    h, w = frames.shape[1:3]
    if t < 2:
        z = np.zeros((0, h, w, 2), np.float32)
        return z, z.copy()
    if method == "raft":
        if raft is None:
            raise ValueError("raft flow needs the model (load_raft)")
        return raft_flow(raft, frames[:-1], frames[1:]), raft_flow(raft, frames[1:], frames[:-1])
    fn = {"dis": dis_flow, "farneback": farneback_flow}.get(method)
    if fn is None:
        raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {method!r}")
    fwd = np.stack([fn(frames[i], frames[i + 1]) for i in range(t - 1)])
    bwd = np.stack([fn(frames[i + 1], frames[i]) for i in range(t - 1)])
    return fwd, bwd


def warp(img: np.ndarray, flow: np.ndarray, *, nearest: bool = False, border=0) -> np.ndarray:
    """``img`` (frame ``b``: (H, W) or (H, W, C)) sampled at ``x + flow[x]``, in frame ``a``'s grid."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = img if img.dtype != np.int32 else img.astype(np.float32)
    out = cv2.remap(src, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return out.astype(img.dtype) if img.dtype == np.int32 else out


def occlusion(flow_ab: np.ndarray, flow_ba: np.ndarray, *, alpha: float = ALPHA, beta: float = BETA) -> np.ndarray:
    """bool (H, W): pixels of ``a`` with no reliable match in ``b`` (see the module's docstring)."""
    h, w = flow_ab.shape[:2]
    back = warp(flow_ba, flow_ab)
    s = flow_ab + back
    lhs = (s ** 2).sum(-1)
    rhs = alpha * ((flow_ab ** 2).sum(-1) + (back ** 2).sum(-1)) + beta
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = gx + flow_ab[..., 0], gy + flow_ab[..., 1]
    outside = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    return (lhs > rhs) | outside


def clip_flows(frames: np.ndarray, method: str = "dis", raft=None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """Flows and occlusions between neighbours of a clip (or a block of it) ``(T, H, W, 3)``:
    ``fwd[t]`` from t to t+1, ``bwd[t]`` from t+1 to t (float32 (T-1, H, W, 2)), and
    ``occ_fwd[t]`` (pixels of t not seen in t+1), ``occ_bwd[t]`` (pixels of t+1 not seen in t)."""
    t = len(frames)
    h, w = frames.shape[1:3]
    fwd, bwd = pair_flows(frames, method, raft)
    occ_f = np.stack([occlusion(fwd[i], bwd[i]) for i in range(t - 1)]) if t > 1 else np.zeros((0, h, w), bool)
    occ_b = np.stack([occlusion(bwd[i], fwd[i]) for i in range(t - 1)]) if t > 1 else np.zeros((0, h, w), bool)
    return fwd, bwd, occ_f, occ_b


def propagate(labels: np.ndarray, known: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, occ_f: np.ndarray,
              occ_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe propagation: carry known labels (``labels`` int (T, H, W), ``known`` bool) frame
    by frame along the flow, forwards and backwards, through non-occluded pixels; a frame takes
    the labels of its nearest known source. Returns (labels, reached) where ``reached`` marks
    pixels that got a label."""
    t = len(labels)
    out = np.where(known, labels, -1).astype(np.int32)
    dist = np.where(known, 0, np.iinfo(np.int32).max).astype(np.int64)
    # forwards: frame i+1 from frame i, sampled along bwd[i] (where i+1's pixels are in i)
    for direction in (1, -1):
        cur_lab = out.copy()
        cur_d = dist.copy()
        rng = range(1, t) if direction == 1 else range(t - 2, -1, -1)
        for i in rng:
            prev = i - direction
            flow = bwd[prev] if direction == 1 else fwd[i]
            occ = occ_b[prev] if direction == 1 else occ_f[i]
            lab = warp(cur_lab[prev], flow, nearest=True, border=-1)
            d = warp(cur_d[prev].astype(np.float32), flow, nearest=True, border=float(np.iinfo(np.int32).max))
            ok = (~occ) & (lab >= 0) & (d + 1 < cur_d[i])
            cur_lab[i] = np.where(ok, lab, cur_lab[i])
            cur_d[i] = np.where(ok, d + 1, cur_d[i])
        better = cur_d < dist
        out = np.where(better, cur_lab, out)
        dist = np.where(better, cur_d, dist)
    return out, out >= 0
