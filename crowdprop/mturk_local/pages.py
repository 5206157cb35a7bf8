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

import html as _html
import re
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


SITE_CSS = (
    "*{box-sizing:border-box}"
    "body{font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f4f4;color:#222}"
    "header{background:#223;color:#fff}"
    "header nav{max-width:960px;margin:0 auto;padding:8px 14px;display:flex;gap:16px;align-items:baseline;"
    "flex-wrap:wrap}"
    "header b{font-size:16px}header a{color:#dde6ff}"
    "main{max-width:960px;margin:0 auto;padding:10px 14px}"
    "h1{font-size:19px;margin:10px 0}"
    "a{color:#1d4fb8}"
    ".card,fieldset{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 12px;margin:0 0 10px;"
    "min-width:0;overflow-wrap:anywhere}"
    "fieldset{border:2px solid #223}"
    "legend{float:left;width:100%;padding:0;margin:0 0 6px;font-size:17px;font-weight:600}"
    "legend+*{clear:both}"
    "fieldset img{display:block;max-width:min(340px,100%);height:auto;margin:6px auto;background:#888}"
    "fieldset label{display:inline-block;min-width:110px;margin:4px 8px 4px 0;padding:6px 10px;border:2px solid #999;"
    "border-radius:6px;cursor:pointer}"
    "fieldset label:has(input:checked){border-color:#223;background:#dde6ff;font-weight:700}"
    ".scroll{overflow-x:auto}"
    "table{border-collapse:collapse;background:#fff;border:1px solid #ddd;border-radius:8px;width:100%}"
    "th,td{padding:6px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}"
    "th{background:#eef0f6;font-weight:600;white-space:nowrap}"
    "td:nth-child(3){overflow-wrap:anywhere;min-width:9em}"
    "td form{margin:0;display:flex;gap:6px;flex-wrap:wrap;align-items:center}"
    "input[type=text],input:not([type]){font:inherit;padding:4px 6px;border:1px solid #999;border-radius:4px;"
    "max-width:100%}"
    "button{font:inherit;font-weight:600;padding:6px 16px;border:0;border-radius:6px;background:#223;color:#fff;"
    "cursor:pointer}"
    "button:hover{background:#3a4a7a}"
    "@media (max-width:600px){.scroll table,.scroll tbody,.scroll tr,.scroll td{display:block;width:100%}"
    ".scroll tr:has(th){display:none}.scroll tr{padding:6px 0;border-bottom:2px solid #ddd}"
    ".scroll td{border:0;padding:2px 10px;overflow-wrap:anywhere;min-width:0}}"
    ".err{border-left:6px solid #c0392b}"
    ".err .code{color:#c0392b;font-weight:700;margin:0}"
    ".ok{border-left:6px solid #2a9d4b}"
)
"""The local endpoint's own pages (index, accept, qualification test, messages and errors):
the look of the worker page (``hit_templates/hit.html``): its font, colors and framed cards.
On a phone (600 px or less) a table's rows become stacked cards, the header row hidden."""


_PARAGRAPHS = re.compile(r"(<p( [^<>]*)?>((?!</?(p|table|form|fieldset|ul|div)\b).)*</p>)+", re.S)
"""A message: paragraphs only."""


def site_page(title: str, inner: str, *, status: int = 200) -> str:
    """A page of the local endpoint: ``inner`` (HTML, already escaped) under a heading
    ``title`` (text), in the worker page's style (:data:`SITE_CSS`). A ``status`` of 400 or
    more frames the message as an error with its HTTP status; other messages (``inner``
    paragraphs only) as a card."""
    t = _html.escape(title)
    if status >= 400:
        body = f"<div class='card err' role='alert'><p class='code'>HTTP {int(status)}</p>{inner}</div>"
    elif _PARAGRAPHS.fullmatch(inner):
        body = f"<div class='card ok'>{inner}</div>"
    else:
        body = inner
    body = body.replace("<table", "<div class='scroll'><table").replace("</table>", "</table></div>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
            f"<title>{t}</title><style>{SITE_CSS}</style></head><body>"
            "<header><nav><b>local MTurk</b><a href='/'>HITs and tests</a><a href='/_ledger'>ledger</a></nav></header>"
            f"<main><h1>{t}</h1>{body}</main></body></html>")
