"""QuestionFormAnswers parsing and checking against the questions asked."""
from __future__ import annotations

from xml.sax.saxutils import escape

from hypothesis import given, settings, strategies as st

from crowdprop.crowd.mturk_xml import parse_answers, question_ids_in

NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"


def answers_xml(pairs) -> str:
    body = "".join(f"<Answer><QuestionIdentifier>{escape(q)}</QuestionIdentifier><FreeText>{escape(v)}</FreeText>"
                   "</Answer>" for q, v in pairs)
    return f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{NS}">{body}</QuestionFormAnswers>'


ASKED = ["q1", "q2", "q3"]


def test_valid_answers_are_parsed_case_and_space_insensitive():
    xml = answers_xml([("q1", "yes"), ("q2", "no"), ("q3", " YES "), ("workerId", "W1")])
    answers, flag = parse_answers(xml, ASKED)
    assert flag is None
    assert answers == {"q1": True, "q2": False, "q3": True}


def test_unknown_question_id_flags():
    answers, flag = parse_answers(answers_xml([("q1", "yes"), ("q2", "no"), ("q3", "no"), ("q9", "yes")]), ASKED)
    assert flag is not None and "unknown question id 'q9'" in flag


def test_missing_answer_flags():
    answers, flag = parse_answers(answers_xml([("q1", "yes"), ("q3", "no")]), ASKED)
    assert flag is not None and "missing answers to 1 question" in flag and "'q2'" in flag


def test_malformed_value_flags():
    _, flag = parse_answers(answers_xml([("q1", "yes"), ("q2", "maybe"), ("q3", "no")]), ASKED)
    assert flag is not None and "malformed" in flag and "q2" in flag
    _, flag = parse_answers(answers_xml([("q1", "yes"), ("q2", "yes|no"), ("q3", "no")]), ASKED)
    assert flag is not None and "malformed" in flag


def test_duplicate_answer_flags():
    _, flag = parse_answers(answers_xml([("q1", "yes"), ("q1", "no"), ("q2", "no"), ("q3", "no")]), ASKED)
    assert flag is not None and "twice" in flag


def test_not_xml_flags():
    answers, flag = parse_answers("<QuestionFormAnswers><Answer>", ASKED)
    assert answers == {} and flag.startswith("malformed answer XML")


def test_entity_expansion_bomb_is_flagged_not_expanded():
    levels = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    for i in range(1, 10):
        levels.append(f'<!ENTITY lol{i} "{"".join(f"&lol{i-1};" for _ in range(10))}">')
    xml = ('<?xml version="1.0"?><!DOCTYPE QuestionFormAnswers [' + "".join(levels) + "]>"
           f'<QuestionFormAnswers xmlns="{NS}"><Answer><QuestionIdentifier>q1</QuestionIdentifier>'
           "<FreeText>&lol9;</FreeText></Answer></QuestionFormAnswers>")
    answers, flag = parse_answers(xml, ASKED)
    assert answers == {}
    assert flag is not None and flag.startswith("refused answer XML")


def test_external_entity_is_flagged_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xml = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
           f'<QuestionFormAnswers xmlns="{NS}"><Answer><QuestionIdentifier>q1</QuestionIdentifier>'
           "<FreeText>&x;</FreeText></Answer></QuestionFormAnswers>")
    answers, flag = parse_answers(xml, ASKED)
    assert answers == {}
    assert flag is not None and flag.startswith("refused answer XML") and "TOPSECRET" not in flag


def test_oversized_answer_is_flagged_unparsed():
    big = answers_xml([("q1", "yes"), ("q2", "no"), ("q3", "no"), ("comment", "x" * 20000)])
    answers, flag = parse_answers(big, ASKED)
    assert answers == {} and flag.startswith("oversized answer")


def test_question_ids_are_read_back_from_a_page():
    xml = '<fieldset data-question-id="a&amp;b" data-mask-id="1"></fieldset><fieldset data-question-id="c">'
    assert question_ids_in(xml) == ["a&b", "c"]


qids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="|"),
               min_size=1, max_size=12).filter(lambda s: s.strip() == s and s not in
                                                ("assignmentId", "workerId", "hitId", "turkSubmitTo"))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(qids, st.booleans(), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_round_trip_any_ids_any_order(truth, rnd):
    pairs = [(q, "yes" if v else "no") for q, v in truth.items()]
    rnd.shuffle(pairs)
    answers, flag = parse_answers(answers_xml(pairs), list(truth))
    assert flag is None
    assert answers == truth
