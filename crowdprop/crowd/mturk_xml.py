"""MTurk's XML on the requester's side: the QuestionForm and AnswerKey of a qualification test,
the QuestionFormAnswers of an assignment, and the question ids of a published HTMLQuestion.

Written XML escapes every value; read XML goes through defusedxml (no DTDs, entities or
external references) and is checked against the questions the HIT asked.
"""
from __future__ import annotations

import re
from typing import Sequence

QUESTION_FORM_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2017-11-06/QuestionForm.xsd"
ANSWER_KEY_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/AnswerKey.xsd"
MAX_TEST_BYTES = 65535
"""MTurk's limit on a qualification Test and on an AnswerKey."""

PASSTHROUGH_FIELDS = frozenset({"assignmentId", "workerId", "hitId", "turkSubmitTo"})
"""Form fields that may come back as answers but are not questions."""
MAX_ANSWER_CHARS = 16
"""An answer value longer than this is malformed (``yes``/``no`` expected)."""


def qualification_question_id(mask_id: int) -> str:
    """QuestionIdentifier of the test question on mask ``mask_id``: ``mask-<mask_id>``."""
    return f"mask-{int(mask_id)}"


def _x(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text), {'"': "&quot;"})


YES_NO = (("yes", "Yes"), ("no", "No"))


def question_form_xml(items: Sequence[tuple[str, str, str]], *, title: str, instructions: str,
                      question: str = "Is the colored region a correct outline of the {name}?",
                      selections: Sequence[tuple[str, str]] = YES_NO) -> str:
    """QuestionForm XML (2017-11-06 schema) of single-choice questions on pictures.

    Parameters
    ----------
    items : sequence of (question_id, class_name, image_url), (n,)
    title, instructions
        Shown once above the questions (Overview).
    question
        Each question's text; ``{name}`` is its class name.
    selections : sequence of (SelectionIdentifier, text)
        The choices of every question (yes/no by default).
    """
    parts = [f'<QuestionForm xmlns="{QUESTION_FORM_NS}">',
             f"<Overview><Title>{_x(title)}</Title><Text>{_x(instructions)}</Text></Overview>"]
    choices = "".join(f"<Selection><SelectionIdentifier>{_x(sid)}</SelectionIdentifier><Text>{_x(text)}</Text>"
                      "</Selection>" for sid, text in selections)
    for k, (qid, name, url) in enumerate(items, start=1):
        sub = "png" if url.split("?", 1)[0].lower().endswith(".png") else "jpeg"
        parts.append(
            f"<Question><QuestionIdentifier>{_x(qid)}</QuestionIdentifier><DisplayName>Question {k}</DisplayName>"
            f"<IsRequired>true</IsRequired><QuestionContent>"
            f"<Text>{_x(question.format(name=name))}</Text>"
            f"<Binary><MimeType><Type>image</Type><SubType>{sub}</SubType></MimeType>"
            f"<DataURL>{_x(url)}</DataURL><AltText>highlighted region, question {k}</AltText></Binary>"
            f"</QuestionContent><AnswerSpecification><SelectionAnswer><StyleSuggestion>radiobutton</StyleSuggestion>"
            f"<Selections>{choices}</Selections></SelectionAnswer></AnswerSpecification></Question>")
    parts.append("</QuestionForm>")
    return "".join(parts)


def answer_key_xml(answers: Sequence[tuple[str, bool | str]]) -> str:
    """AnswerKey XML (2005-10-01 schema): the right selection of each question (True/False for
    ``yes``/``no``, or a SelectionIdentifier) scores 1, and the qualification value is the
    percentage of questions answered right."""
    parts = [f'<AnswerKey xmlns="{ANSWER_KEY_NS}">']
    for qid, right in answers:
        sid = right if isinstance(right, str) else ("yes" if right else "no")
        parts.append(f"<Question><QuestionIdentifier>{_x(qid)}</QuestionIdentifier><AnswerOption>"
                     f"<SelectionIdentifier>{_x(sid)}</SelectionIdentifier>"
                     f"<AnswerScore>1</AnswerScore></AnswerOption></Question>")
    parts.append(f"<QualificationValueMapping><PercentageMapping><MaximumSummedScore>{len(answers)}"
                 f"</MaximumSummedScore></PercentageMapping></QualificationValueMapping></AnswerKey>")
    return "".join(parts)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def answer_fields(xml: str, limit: int) -> tuple[list[tuple[str, str | None]], str | None]:
    """The ``(question id, FreeText or None)`` pairs of a QuestionFormAnswers XML, in order, form
    fields that are not questions (:data:`PASSTHROUGH_FIELDS`) left out; or no pairs and a
    one-line reason when the XML is over ``limit`` bytes, malformed, or holds a DTD or entities
    (refused by defusedxml, never expanded)."""
    import defusedxml
    from defusedxml import ElementTree as DET
    from xml.etree.ElementTree import ParseError

    size = len(xml.encode("utf-8", "replace"))
    if size > limit:
        return [], f"oversized answer: {size} bytes (at most {limit})"
    try:
        root = DET.fromstring(xml, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        return [], f"refused answer XML: {type(e).__name__}"
    except (ParseError, ValueError) as e:
        return [], f"malformed answer XML: {e}"
    out: list[tuple[str, str | None]] = []
    for node in root:
        if _local(node.tag) != "Answer":
            continue
        qid, value = None, None
        for child in node:
            name = _local(child.tag)
            if name == "QuestionIdentifier":
                qid = (child.text or "").strip()
            elif name == "FreeText":
                value = child.text or ""
        if qid is not None and qid not in PASSTHROUGH_FIELDS:
            out.append((qid, value))
    return out, None


def parse_answers(xml: str, asked: Sequence[str] | None, *, max_bytes: int | None = None
                  ) -> tuple[dict[str, bool], str | None]:
    """Parse MTurk QuestionFormAnswers XML and check it against the questions asked.

    Parameters
    ----------
    xml
        The assignment's ``Answer`` field.
    asked
        Question ids of the HIT, or None when unknown (then only the format is checked).
    max_bytes
        Larger answers are refused unparsed (default: 64 bytes per question + 4 KiB).

    Returns
    -------
    answers, flag
        ``{question_id: True for "yes" / False for "no"}`` and None, or the
        answers that could be read and a one-line reason the assignment is flagged.
        DTDs, entities and external references are refused (defusedxml), never expanded.
    """
    limit = max_bytes if max_bytes is not None else 4096 + 256 * len(asked or ())
    fields, error = answer_fields(xml, limit)
    if error is not None:
        return {}, error
    answers: dict[str, bool] = {}
    seen: set[str] = set()
    problems: list[str] = []
    known = set(asked) if asked is not None else None
    for qid, value in fields:
        if known is not None and qid not in known:
            problems.append(f"unknown question id {qid[:40]!r}")
        elif qid in seen:
            problems.append(f"question {qid[:40]!r} answered twice")
        elif value is None or len(value) > MAX_ANSWER_CHARS or value.strip().lower() not in ("yes", "no"):
            problems.append(f"malformed answer {str(value)[:20]!r} to {qid[:40]!r} (yes/no expected)")
        else:
            answers[qid] = value.strip().lower() == "yes"
        seen.add(qid)
    if asked is not None:
        missing = [q for q in asked if q not in seen]
        if missing:
            problems.append(f"missing answers to {len(missing)} question(s), first {missing[0]!r}")
    return answers, ("; ".join(problems[:3]) if problems else None)


_QID_RE = re.compile(r'data-question-id="([^"]*)"')


def question_ids_in(question_xml: str) -> list[str]:
    """Question ids of a published HTMLQuestion (the ``data-question-id`` attributes)."""
    import html

    return [html.unescape(m) for m in _QID_RE.findall(question_xml)]
