"""The worker page of video mode (``hit_templates/video_unit.html``): each question shows one
region highlighted in its frame (the rest darkened, a yellow edge) and the classes in the order
of the network's mean probability over the region (keys 1-9), then "mixed" (key 0 or M). When
the campaign has classes beyond a question's nine, one "Other class" list on the page (key / or O, or
a tap: a filter box and a button per class, by name) offers them; the choice checks the question's
"other" radio button (the page's script makes it), whose value is that class id, so the form has
the same fields either way and the page grows only by the list, not per question.
Submitted answers are the class id, or ``mixed``. Pictures are inline PNG data URIs unless
``image_url`` gives their address: MTurk's HTMLQuestion is limited to 64 KB, which a few
inline pictures fill, so a real HIT serves them (:func:`highlight` draws them)."""
from __future__ import annotations

import base64
import io
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..hits.render import _environment, templates_dir

MAX_KEYED = 9


def highlight(frame: np.ndarray, mask: np.ndarray, *, scale: int = 4) -> bytes:
    """PNG bytes: ``frame`` (H, W, 3) scaled ``scale`` x, outside ``mask`` darkened, its edge yellow."""
    from PIL import Image

    big = np.repeat(np.repeat(frame, scale, 0), scale, 1).astype(np.float32)
    m = np.repeat(np.repeat(mask.astype(bool), scale, 0), scale, 1)
    big[~m] *= 0.35
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    big[edge] = (255, 215, 0)
    buf = io.BytesIO()
    Image.fromarray(big.clip(0, 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def choice_order(probs_region_mean: np.ndarray) -> list[int]:
    """Class ids, most probable first (ties by id)."""
    return [int(i) for i in np.lexsort((np.arange(len(probs_region_mean)), -probs_region_mean))]


def render_hit(frames: Any, regions: Any, questions: pd.DataFrame, classes: list[str],
               probs: np.ndarray | None, *, scale: int = 4,
               image_url: Callable[[int, int], str] | None = None) -> str:
    """HTML of one HIT. ``frames`` and ``regions``: arrays or the run directory's lazy chunk
    stores (indexed by frame). ``questions``: rows with ``question``, ``frame``, ``region`` (and
    optionally ``qid``, the form field name, else ``q<question>``, and ``choices``, the class ids
    offered in order, else ordered by ``probs``); ``probs`` (T, K, H, W) orders the choices
    (``None``: class id order); ``image_url(frame, region)`` the picture's address (``None``: inline)."""
    qs: list[dict] = []
    for q in questions.to_dict("records"):
        t, reg = int(q["frame"]), int(q["region"])
        mask = regions[t] == reg
        if q.get("choices") is not None:
            order = [int(c) for c in q["choices"]]
        elif probs is not None:
            order = choice_order(probs[t][:, mask].mean(1))
        else:
            order = list(range(len(classes)))
        if image_url is not None:
            url = image_url(t, reg)
        else:
            url = "data:image/png;base64," + base64.b64encode(highlight(frames[t], mask, scale=scale)).decode("ascii")
        qs.append({"qid": str(q["qid"]) if q.get("qid") is not None else f"q{int(q['question'])}", "frame": t,
                   "region": reg, "url": url, "width": frames.shape[2] * scale, "height": frames.shape[1] * scale,
                   "choices": [{"id": c, "name": classes[c]} for c in order[:MAX_KEYED]]})
    return _render(qs, classes)


def other_classes(classes: list[str]) -> list[dict]:
    """The "Other class" list: every class by name (case-insensitive, ties by id); the page hides
    those on the current question's keys."""
    return [{"id": c, "name": classes[c]} for c in sorted(range(len(classes)), key=lambda c: (classes[c].lower(), c))]


def _render(qs: list[dict], classes: list[str]) -> str:
    unkeyed = any(len({c["id"] for c in q["choices"]}) < len(classes) for q in qs)
    env = _environment(templates_dir())
    return env.get_template("video_unit.html").render(questions=qs, n=len(qs),
                                                      others=other_classes(classes) if unkeyed else [])
