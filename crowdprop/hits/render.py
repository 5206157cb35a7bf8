"""Render one HIT as the worker page (``hit_templates/hit.html``) and wrap it
in MTurk's HTMLQuestion XML.

The page implements the worker-page contract of :mod:`crowdprop.hits`. Jinja2
autoescaping is on: class names, ids and URLs from user files cannot inject
markup. The page loads no third-party script or stylesheet; the images are the
only external resources (their URLs come from ``image_url``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from ..crowd.base import HitRequest
from ..errors import CrowdpropError

log = logging.getLogger(__name__)

MAX_QUESTION_BYTES = 65535
"""MTurk refuses a Question larger than 64 KB (UTF-8 bytes, whitespace included)."""
HTML_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"


class HitTooLarge(CrowdpropError):
    """The HTMLQuestion of a HIT passes MTurk's 64 KB limit."""


def templates_dir() -> Path:
    """Folder holding the jinja2 templates (installed package data or the source tree)."""
    try:
        from importlib.resources import files

        path = Path(str(files("crowdprop.hit_templates")))
        if (path / "hit.html").exists():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "hit_templates"


def _environment(folder: Path):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class PageRenderer:
    """Render HITs into worker pages.

    Parameters
    ----------
    image_url
        ``image_url(row) -> str``: the absolute URL of the overlay image of one
        mask, given its masks.parquet row (a Series whose ``.name`` is the row
        number), e.g. :meth:`crowdprop.hits.images.OverlayStore.url`.
    class_names
        ``category_id -> name`` shown to workers.
    masks
        Default masks table for :meth:`render`.
    frame_height
        HTMLQuestion FrameHeight (0: the full worker window).
    max_bytes
        Question size limit (MTurk: 65535).
    template
        Template file name in ``templates``.
    templates
        Folder of templates (default: :func:`templates_dir`).
    """

    def __init__(self, image_url: Callable[[pd.Series], str], class_names: Mapping[int, str], *,
                 masks: pd.DataFrame | None = None, frame_height: int = 0, max_bytes: int = MAX_QUESTION_BYTES,
                 template: str = "hit.html", templates: str | Path | None = None, image_px: int = 256):
        self.image_url = image_url
        self.class_names = dict(class_names)
        self.masks = masks
        self.frame_height = frame_height
        self.max_bytes = max_bytes
        self.image_px = image_px
        self._template = _environment(Path(templates) if templates else templates_dir()).get_template(template)

    def class_name(self, category_id: int) -> str:
        return self.class_names.get(int(category_id), f"object of class {int(category_id)}")

    def render(self, hit: HitRequest, masks: pd.DataFrame | None = None) -> str:
        """The worker page (HTML) of ``hit``: one fieldset per question, in the order given."""
        masks = self.masks if masks is None else masks
        if masks is None:
            raise ValueError("PageRenderer.render needs the masks table")
        questions = []
        for q in hit.questions:
            row = masks.iloc[int(q.mask_row)]
            cid = int(row["category_id"])
            questions.append({"qid": q.question_id, "mask_id": int(row["mask_id"]), "category_id": cid,
                              "class_name": self.class_name(cid), "url": self.image_url(row)})
        return self._template.render(questions=questions, n=len(questions), image_px=self.image_px,
                                     reward=f"{hit.reward_usd:.2f}")

    def question_xml(self, html: str, *, token: str | None = None) -> str:
        """The HTMLQuestion XML of a page; raises :class:`HitTooLarge` past :attr:`max_bytes`."""
        body = html.replace("]]>", "]]]]><![CDATA[>")
        xml = (f'<HTMLQuestion xmlns="{HTML_QUESTION_NS}"><HTMLContent><![CDATA[\n{body}\n]]></HTMLContent>'
               f"<FrameHeight>{int(self.frame_height)}</FrameHeight></HTMLQuestion>")
        size = len(xml.encode("utf-8"))
        if size > self.max_bytes:
            n = html.count('class="cp-question"')
            raise HitTooLarge(
                f"HIT {token or ''}: the HTMLQuestion is {size} bytes and MTurk accepts at most {self.max_bytes}; "
                f"lower [crowd] questions_per_hit (this HIT has {n} questions) or use shorter image URLs "
                f"([mturk] image_base_url instead of presigned S3 URLs)")
        return xml
