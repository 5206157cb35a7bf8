"""The worker side of a HIT: questions read from the page, answers written as MTurk does.

Glossary
--------
HTMLQuestion
    The XML a requester sends as ``Question``::

        <HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd">
          <HTMLContent><![CDATA[ ...the worker page... ]]></HTMLContent>
          <FrameHeight>0</FrameHeight>
        </HTMLQuestion>

question fieldset
    One element per question on the worker page (see :mod:`crowdprop.hits`)::

        <fieldset class="cp-question" data-question-id="QID" data-mask-id="MASK_ID">

QuestionFormAnswers
    What MTurk returns in ``Assignment.Answer``: one ``<Answer>`` per submitted
    form field except ``assignmentId``; repeated fields are joined with ``|``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

ANSWERS_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
HTML_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"
EXTERNAL_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
QUESTION_KINDS = ("HTMLQuestion", "ExternalQuestion", "QuestionForm")
MAX_QUESTION_BYTES = 65535
"""MTurk: "The XML question data must not be larger than 64 kilobytes (65,535 bytes)"."""


class QuestionXMLError(ValueError):
    """The ``Question`` parameter is not a question document MTurk would take."""


@dataclass(frozen=True)
class PageQuestion:
    """One question fieldset on a worker page."""

    question_id: str
    mask_id: int | None
    """``None`` when the fieldset has no (integer) ``data-mask-id``."""


@dataclass(frozen=True)
class QuestionDocument:
    kind: str
    """``HTMLQuestion``, ``ExternalQuestion`` or ``QuestionForm``."""
    html: str | None
    """The HTMLContent of an HTMLQuestion (the worker page), else ``None``."""
    external_url: str | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_question_xml(question: str) -> QuestionDocument:
    """Check a ``Question`` parameter the way MTurk does and return its parts.

    Raises :class:`QuestionXMLError` when the text is over 65,535 bytes, not
    well-formed XML, not one of the three question kinds, or an HTMLQuestion
    without HTMLContent / FrameHeight.
    """
    if len(question.encode("utf-8")) > MAX_QUESTION_BYTES:
        raise QuestionXMLError(f"The question is {len(question.encode('utf-8'))} bytes; the limit is {MAX_QUESTION_BYTES}")
    try:
        root = SafeET.fromstring(question)
    except (ET.ParseError, DefusedXmlException) as e:
        raise QuestionXMLError(f"The question is not well-formed XML: {e}") from None
    kind = _local(root.tag)
    if kind not in QUESTION_KINDS:
        raise QuestionXMLError(f"The question root element is <{kind}>; expected one of {', '.join(QUESTION_KINDS)}")
    children = {_local(c.tag): c for c in root}
    if kind == "HTMLQuestion":
        if "HTMLContent" not in children or not (children["HTMLContent"].text or "").strip():
            raise QuestionXMLError("HTMLQuestion needs a non-empty HTMLContent element")
        if "FrameHeight" not in children:
            raise QuestionXMLError("HTMLQuestion needs a FrameHeight element")
        try:
            int((children["FrameHeight"].text or "").strip())
        except ValueError:
            raise QuestionXMLError("FrameHeight must be an integer") from None
        return QuestionDocument(kind, children["HTMLContent"].text)
    if kind == "ExternalQuestion":
        if "ExternalURL" not in children or not (children["ExternalURL"].text or "").strip():
            raise QuestionXMLError("ExternalQuestion needs an ExternalURL element")
        return QuestionDocument(kind, None, children["ExternalURL"].text.strip())
    return QuestionDocument(kind, None)


class _FieldsetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[PageQuestion] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "fieldset":
            return
        a = dict(attrs)
        qid = a.get("data-question-id")
        if not qid:
            return
        raw = a.get("data-mask-id")
        try:
            mid = int(raw) if raw is not None else None
        except ValueError:
            mid = None
        self.found.append(PageQuestion(qid, mid))

    handle_startendtag = handle_starttag


def page_questions(html: str) -> list[PageQuestion]:
    """The question fieldsets of a worker page, in page order."""
    p = _FieldsetParser()
    p.feed(html)
    p.close()
    return p.found


def answers_xml(fields: Iterable[tuple[str, str]]) -> str:
    """QuestionFormAnswers XML for submitted form fields, as MTurk writes it.

    Parameters
    ----------
    fields : iterable of (name, value)
        Form fields in submission order, ``assignmentId`` already removed. A
        name given more than once (checkboxes) becomes one Answer whose values
        are joined with ``|``.
    """
    merged: dict[str, list[str]] = {}
    for name, value in fields:
        merged.setdefault(name, []).append(value)
    parts = [f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{ANSWERS_NS}">']
    for name, values in merged.items():
        parts.append(f"<Answer><QuestionIdentifier>{escape(name)}</QuestionIdentifier>"
                     f"<FreeText>{escape('|'.join(values))}</FreeText></Answer>")
    parts.append("</QuestionFormAnswers>")
    return "".join(parts).encode("ascii", "xmlcharrefreplace").decode("ascii")


def parse_answers_xml(text: str) -> list[tuple[str, str]]:
    """(QuestionIdentifier, FreeText) pairs of a QuestionFormAnswers document, in order."""
    root = SafeET.fromstring(text)
    out = []
    for ans in root.findall(f"{{{ANSWERS_NS}}}Answer"):
        qid = ans.findtext(f"{{{ANSWERS_NS}}}QuestionIdentifier") or ""
        val = ans.findtext(f"{{{ANSWERS_NS}}}FreeText") or ""
        out.append((qid, val))
    return out


def html_question(html: str, frame_height: int = 0) -> str:
    """Wrap a worker page into HTMLQuestion XML (used by tests and the CLI example)."""
    if "]]>" in html:
        raise ValueError("the page must not contain ']]>'")
    return (f'<HTMLQuestion xmlns="{HTML_QUESTION_NS}"><HTMLContent><![CDATA[{html}]]></HTMLContent>'
            f"<FrameHeight>{int(frame_height)}</FrameHeight></HTMLQuestion>")


def question_page(questions: Sequence[tuple[str, int]], *, title: str = "Is this mask correct?") -> str:
    """A minimal worker page that follows the contract of :mod:`crowdprop.hits`.

    Parameters
    ----------
    questions : sequence of (question_id, mask_id)
    """
    body = []
    for qid, mid in questions:
        q = escape(qid, {'"': "&quot;"})
        body.append(
            f'<fieldset class="cp-question" data-question-id="{q}" data-mask-id="{int(mid)}">'
            f'<legend>mask {int(mid)}</legend>'
            f'<label><input type="radio" name="{q}" value="yes" required> yes</label>'
            f'<label><input type="radio" name="{q}" value="no"> no</label></fieldset>')
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head><body>"
            f"<form method='post' id='mturk_form'><input type='hidden' name='assignmentId' id='assignmentId'>"
            + "".join(body) + "<input type='submit'></form>"
            "<script>var p=new URLSearchParams(location.search);"
            "document.getElementById('assignmentId').value=p.get('assignmentId');"
            "var f=document.getElementById('mturk_form');"
            "f.action=(p.get('turkSubmitTo')||'')+'/mturk/externalSubmit?workerId='+encodeURIComponent(p.get('workerId')||'')"
            "+'&hitId='+encodeURIComponent(p.get('hitId')||'');</script></body></html>")
