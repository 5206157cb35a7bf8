"""Qualification tests: a QuestionForm ``Test`` graded with an ``AnswerKey``, as MTurk does.

Glossary
--------
Test
    QuestionForm XML (schema ``2017-11-06/QuestionForm.xsd``, or the older
    ``2005-10-01``): one ``<Question>`` per test question, each with a
    ``QuestionIdentifier`` and a ``SelectionAnswer`` whose ``Selection``
    elements have ``SelectionIdentifier`` values.
AnswerKey
    XML (schema ``2005-10-01/AnswerKey.xsd``): per question, ``AnswerOption``
    elements (a set of ``SelectionIdentifier`` and an ``AnswerScore``, earned
    when the worker selects exactly that set) and an optional ``DefaultScore``;
    then an optional ``QualificationValueMapping`` turning the summed score into
    the qualification's integer value:

    ``PercentageMapping/MaximumSummedScore``
        ``value = floor(100 * score / MaximumSummedScore)`` clipped to [0, 100];
    ``ScaleMapping/SummedScoreMultiplier``
        ``value = floor(score * SummedScoreMultiplier)``;
    ``RangeMapping``
        the ``QualificationValue`` of the first ``SummedScoreRange`` holding the
        score, else ``OutOfRangeQualificationValue``;
    none
        ``value = score``.

Simulated workers
-----------------
A question whose identifier is ``mask-<mask_id>`` (or ``gold-<mask_id>``) asks
"is this mask correct?"; a simulated worker answers it
``pool.answer(worker, "qualification:" + QuestionIdentifier, truth[mask_id])``
by choosing the selection ``yes`` or ``no``, the same answer the in-process
replay (:func:`crowdprop.crowd.qualification.qualification_results`) draws.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

MAX_XML_BYTES = 65535
"""Test and AnswerKey are each at most 64 KB."""
QUESTION_FORM_ROOTS = ("QuestionForm",)
MASK_QUESTION = re.compile(r"^(?:mask|gold)-(\d+)$")


class QualificationXMLError(ValueError):
    """A Test or AnswerKey that MTurk would refuse."""


@dataclass(frozen=True)
class TestQuestion:
    identifier: str
    selections: tuple[str, ...]
    """SelectionIdentifier values offered (empty for a free-text question)."""

    @property
    def mask_id(self) -> int | None:
        m = MASK_QUESTION.match(self.identifier)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class AnswerKey:
    options: dict[str, list[tuple[frozenset, float]]]
    """QuestionIdentifier -> [(selections, score)]."""
    defaults: dict[str, float] = field(default_factory=dict)
    mapping: tuple = ("none",)
    """``("percentage", max)``, ``("scale", multiplier)``, ``("range", [(lo, hi, value)], out)`` or ``("none",)``."""

    def score(self, selected: dict[str, frozenset]) -> float:
        """Summed score of a worker's selections (question id -> set of selection ids)."""
        total = 0.0
        for qid, opts in self.options.items():
            got = selected.get(qid)
            earned = None
            if got is not None:
                earned = next((s for sel, s in opts if sel == got), None)
            total += earned if earned is not None else self.defaults.get(qid, 0.0)
        return total

    def value(self, score: float) -> int:
        """The qualification's IntegerValue for a summed score."""
        kind = self.mapping[0]
        if kind == "percentage":
            return int(min(100, max(0, math.floor(100.0 * score / self.mapping[1] + 1e-9))))
        if kind == "scale":
            return int(math.floor(score * self.mapping[1] + 1e-9))
        if kind == "range":
            for lo, hi, v in self.mapping[1]:
                if lo <= score <= hi:
                    return int(v)
            return int(self.mapping[2])
        return int(math.floor(score + 1e-9))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(text: str, what: str) -> ET.Element:
    if not isinstance(text, str) or not text.strip():
        raise QualificationXMLError(f"{what} is empty")
    size = len(text.encode("utf-8"))
    if size > MAX_XML_BYTES:
        raise QualificationXMLError(f"{what} is {size} bytes; the limit is {MAX_XML_BYTES}")
    try:
        return SafeET.fromstring(text, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as e:
        raise QualificationXMLError(f"{what} is not well-formed XML: {e}") from None


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    """The first child of ``el`` called ``name`` (any namespace), or None (also when ``el`` is None)."""
    return next((c for c in el if _local(c.tag) == name), None) if el is not None else None


def _children(el: ET.Element | None, name: str) -> list[ET.Element]:
    """The children of ``el`` called ``name`` (any namespace); none when ``el`` is None."""
    return [c for c in el if _local(c.tag) == name] if el is not None else []


def _text(el: ET.Element | None) -> str:
    """The stripped text of ``el`` ("" when it is missing or empty)."""
    return (el.text or "").strip() if el is not None else ""


def parse_test(text: str) -> list[TestQuestion]:
    """The questions of a QuestionForm ``Test``, in order.

    Raises :class:`QualificationXMLError` when the text is too large, not
    well-formed, not a QuestionForm, has no question, or repeats an identifier.
    """
    root = _parse(text, "Test")
    if _local(root.tag) not in QUESTION_FORM_ROOTS:
        raise QualificationXMLError(f"Test root element is <{_local(root.tag)}>; expected <QuestionForm>")
    out: list[TestQuestion] = []
    seen: set[str] = set()
    for q in _children(root, "Question"):
        ident = _text(_child(q, "QuestionIdentifier"))
        if not ident:
            raise QualificationXMLError("a Test Question has no QuestionIdentifier")
        if ident in seen:
            raise QualificationXMLError(f"QuestionIdentifier {ident!r} appears twice in the Test")
        seen.add(ident)
        spec = _child(q, "AnswerSpecification")
        if _child(q, "QuestionContent") is None or spec is None:
            raise QualificationXMLError(f"Test Question {ident!r} needs QuestionContent and AnswerSpecification")
        sel = []
        answer = _child(spec, "SelectionAnswer")
        if answer is not None:
            for s in _children(_child(answer, "Selections"), "Selection"):
                sid = _text(_child(s, "SelectionIdentifier"))
                if not sid:
                    raise QualificationXMLError(f"a Selection of Test Question {ident!r} has no SelectionIdentifier")
                sel.append(sid)
            if not sel:
                raise QualificationXMLError(f"the SelectionAnswer of Test Question {ident!r} has no Selection")
        out.append(TestQuestion(ident, tuple(sel)))
    if not out:
        raise QualificationXMLError("the Test has no Question")
    return out


def _number(el: ET.Element | None, what: str) -> float:
    try:
        return float((el.text or "").strip()) if el is not None else float("nan")
    except ValueError:
        raise QualificationXMLError(f"{what} must be a number") from None


def parse_answer_key(text: str, questions: list[TestQuestion]) -> AnswerKey:
    """An AnswerKey checked against the Test's questions and selections."""
    root = _parse(text, "AnswerKey")
    if _local(root.tag) != "AnswerKey":
        raise QualificationXMLError(f"AnswerKey root element is <{_local(root.tag)}>; expected <AnswerKey>")
    known = {q.identifier: set(q.selections) for q in questions}
    options: dict[str, list[tuple[frozenset, float]]] = {}
    defaults: dict[str, float] = {}
    for q in _children(root, "Question"):
        qi = _child(q, "QuestionIdentifier")
        ident = (qi.text or "").strip() if qi is not None else ""
        if ident not in known:
            raise QualificationXMLError(f"AnswerKey Question {ident!r} is not a question of the Test")
        opts = []
        for o in _children(q, "AnswerOption"):
            sel = frozenset((s.text or "").strip() for s in _children(o, "SelectionIdentifier"))
            if not sel or not sel <= known[ident]:
                raise QualificationXMLError(f"AnswerKey Question {ident!r}: an AnswerOption names selections "
                                            f"the Test does not offer")
            score = _number(_child(o, "AnswerScore"), f"AnswerScore of {ident!r}")
            if math.isnan(score):
                raise QualificationXMLError(f"AnswerKey Question {ident!r}: an AnswerOption has no AnswerScore")
            opts.append((sel, score))
        options[ident] = opts
        d = _child(q, "DefaultScore")
        if d is not None:
            defaults[ident] = _number(d, f"DefaultScore of {ident!r}")
    mapping: tuple = ("none",)
    m = _child(root, "QualificationValueMapping")
    if m is not None:
        pct, scale, rng = _child(m, "PercentageMapping"), _child(m, "ScaleMapping"), _child(m, "RangeMapping")
        if pct is not None:
            top = _number(_child(pct, "MaximumSummedScore"), "MaximumSummedScore")
            if not top > 0:
                raise QualificationXMLError("MaximumSummedScore must be a positive number")
            mapping = ("percentage", top)
        elif scale is not None:
            mapping = ("scale", _number(_child(scale, "SummedScoreMultiplier"), "SummedScoreMultiplier"))
        elif rng is not None:
            ranges = [(_number(_child(r, "InclusiveLowerBound"), "InclusiveLowerBound"),
                       _number(_child(r, "InclusiveUpperBound"), "InclusiveUpperBound"),
                       _number(_child(r, "QualificationValue"), "QualificationValue"))
                      for r in _children(rng, "SummedScoreRange")]
            out = _number(_child(rng, "OutOfRangeQualificationValue"), "OutOfRangeQualificationValue")
            mapping = ("range", ranges, 0.0 if math.isnan(out) else out)
        else:
            raise QualificationXMLError("QualificationValueMapping needs PercentageMapping, ScaleMapping or "
                                        "RangeMapping")
    return AnswerKey(options, defaults, mapping)


@dataclass(frozen=True)
class PageItem:
    """A Test question as a browser shows it: its texts, pictures (DataURL) and choices."""

    identifier: str
    texts: tuple[str, ...]
    images: tuple[tuple[str, str], ...]
    """(URL, alt text) of each Binary picture."""
    selections: tuple[tuple[str, str], ...]
    """(SelectionIdentifier, Text) of each choice."""


def test_page(text: str) -> tuple[str, str, list[PageItem]]:
    """``(title, overview text, items)`` of a QuestionForm Test, for a page a person can take it on."""
    root = _parse(text, "Test")

    def texts(el: ET.Element | None) -> tuple[str, ...]:
        return tuple(_text(t) for t in _children(el, "Text") if _text(t))

    overview = _child(root, "Overview")
    title = _text(_child(overview, "Title"))
    intro = " ".join(texts(overview))
    items = []
    for q, tq in zip(_children(root, "Question"), parse_test(text)):
        content = _child(q, "QuestionContent")
        images = []
        for b in _children(content, "Binary"):
            url, alt = _text(_child(b, "DataURL")), _text(_child(b, "AltText"))
            if url.lower().startswith(("http://", "https://")):
                images.append((url, alt))
        choices = []
        answer = _child(_child(q, "AnswerSpecification"), "SelectionAnswer")
        for s in _children(_child(answer, "Selections"), "Selection"):
            label = _child(s, "Text")
            sid = _text(_child(s, "SelectionIdentifier"))  # parse_test checked that it is there
            choices.append((sid, _text(label) if label is not None else sid))
        items.append(PageItem(tq.identifier, texts(content), tuple(images), tuple(choices)))
    return title, intro, items
