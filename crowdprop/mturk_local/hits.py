"""HIT types and HITs at the local endpoint: CreateHITType, CreateHIT(WithHITType), GetHIT,
ListHITs, ListReviewableHITs, UpdateHITReviewStatus, UpdateExpirationForHIT,
CreateAdditionalAssignmentsForHIT and DeleteHIT, with MTurk's checks and errors.

A HIT type's id is a hash of its values (the same values give the same type, as on MTurk);
a ``UniqueRequestToken`` is refused for 24 hours after first use. Creating a HIT, or adding
assignments to one, lets simulated workers preview it (:mod:`.simulation`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Mapping

from ..crowd.base import content_key
from .pages import QuestionXMLError, page_questions, parse_question_xml
from .params import ParamChecks
from .records import (DEFAULT_AUTO_APPROVAL_S, MAX_ASSIGNMENTS, MAX_AUTO_APPROVAL_S, MAX_LIFETIME_S, MIN_DURATION_S,
                      TOKEN_LIFETIME_S, Hit, HitType, cents_of, manual_annotation)
from .simulation import Simulation

log = logging.getLogger(__name__)


class HitOperations(ParamChecks, Simulation):
    """The HIT type and HIT operations."""

    def _op_create_hit_type(self, p: Mapping) -> dict:
        return {"HITTypeId": self._hit_type(p).id}

    def _hit_type(self, p: Mapping) -> HitType:
        title = self._str(p, "Title", required=True, min_len=1, max_len=128)
        description = self._str(p, "Description", required=True, min_len=1, max_len=2000)
        keywords = self._str(p, "Keywords", max_len=1000)
        reward = cents_of(self._str(p, "Reward", required=True), "Reward")
        if reward < 1:
            raise self._err("The reward must be at least 0.01 USD.", "AWS.ParameterOutOfRange")
        duration = self._int(p, "AssignmentDurationInSeconds", required=True, lo=MIN_DURATION_S, hi=MAX_LIFETIME_S)
        auto = self._int(p, "AutoApprovalDelayInSeconds", default=DEFAULT_AUTO_APPROVAL_S, lo=0,
                         hi=MAX_AUTO_APPROVAL_S)
        reqs = self._requirements(p.get("QualificationRequirements"))
        canon = json.dumps([title, description, keywords, reward, duration, auto, reqs], sort_keys=True)
        tid = "3" + base64.b32encode(hashlib.blake2b(canon.encode(), digest_size=20).digest()).decode()[:29]
        if tid not in self._hit_types:
            self._hit_types[tid] = HitType(tid, title, description, keywords, reward, duration, auto, reqs)
        return self._hit_types[tid]

    def _op_create_hit(self, p: Mapping) -> dict:
        t = self._hit_type(p)
        return self._create_hit(p, t)

    def _op_create_hit_with_hit_type(self, p: Mapping) -> dict:
        tid = self._entity(p, "HITTypeId")
        t = self._hit_types.get(tid)
        if t is None:
            raise self._err(f"HITType {tid} does not exist.", "AWS.MechanicalTurk.HITTypeDoesNotExist")
        return self._create_hit(p, t)

    def _create_hit(self, p: Mapping, t: HitType) -> dict:
        now = self.clock()
        max_asg = self._int(p, "MaxAssignments", default=1, lo=1, hi=MAX_ASSIGNMENTS)
        lifetime = self._int(p, "LifetimeInSeconds", required=True, lo=MIN_DURATION_S, hi=MAX_LIFETIME_S)
        annotation = self._str(p, "RequesterAnnotation", max_len=255)
        token = self._str(p, "UniqueRequestToken", min_len=1, max_len=64)
        if p.get("HITLayoutId") is not None:
            raise self._err("HITLayoutId is not supported by the local MTurk endpoint; send a Question.",
                            "AWS.NotImplemented")
        question = self._str(p, "Question", required=True, min_len=1)
        try:
            doc = parse_question_xml(question)
        except QuestionXMLError as e:
            raise self._err(str(e), "AWS.MechanicalTurk.XMLParseError") from None
        if token is not None:
            seen = self._hit_tokens.get(token)
            if seen is not None and now - seen[1] < TOKEN_LIFETIME_S:
                raise self._err(f'The HIT with ID "{seen[0]}" already exists.', "AWS.MechanicalTurk.HitAlreadyExists")
        hid = self._new_id("hit")
        n = next(self._hit_count)
        hit = Hit(hid, next(self._seq), t, "3" + t.id[1:][::-1], question, doc.kind, doc.html,
                   page_questions(doc.html) if doc.html is not None else [], max_asg, now, now + lifetime,
                   annotation, token, token if token is not None else f"#{n}")
        if hit.questions:  # simulated answers follow what the HIT asks (crowd.base.content_key)
            hit.key = content_key([q.question_id for q in hit.questions])
        hit.simulated = doc.kind == "HTMLQuestion" and not manual_annotation(annotation)
        self._hits[hid] = hit
        if token is not None:
            self._hit_tokens[token] = (hid, now)
            self._hits_per_token.setdefault(token, []).append(hid)
        self._schedule(hit, max_asg, hit.key)
        self._advance()
        log.debug("HIT %s created (%d assignments, %d questions)", hid, max_asg, len(hit.questions))
        return {"HIT": self._hit_view(hit)}

    def _op_get_hit(self, p: Mapping) -> dict:
        return {"HIT": self._hit_view(self._get_hit(self._entity(p, "HITId")))}

    def _op_list_hits(self, p: Mapping) -> dict:
        items = sorted((h.seq, h) for h in self._hits.values() if not h.deleted)
        page, nxt = self._page("hits", items, p)
        out = {"NumResults": len(page), "HITs": [self._hit_view(h) for h in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_list_reviewable_hits(self, p: Mapping) -> dict:
        want = p.get("Status") or "Reviewable"
        tid = p.get("HITTypeId")
        now = self.clock()
        items = sorted((h.seq, h) for h in self._hits.values() if not h.deleted
                       and (tid is None or h.type.id == tid) and self._status(h, now)[0] == want)
        page, nxt = self._page("reviewable", items, p)
        out = {"NumResults": len(page), "HITs": [self._hit_view(h) for h in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_update_hit_review_status(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        status = self._status(hit, self.clock())[0]
        revert = bool(p.get("Revert", False))
        if (status, revert) not in (("Reviewable", False), ("Reviewing", True)):
            raise self._err(f"This HIT is currently in the state '{status}'.", "AWS.MechanicalTurk.InvalidHITState")
        hit.reviewing = not revert
        return {}

    def _op_update_expiration_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        at = p.get("ExpireAt")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise self._err("Parameter ExpireAt is required.", "AWS.MissingParameters")
        now = self.clock()
        hit.expiration = max(float(at), now)
        self._advance()
        return {}

    def _op_create_additional_assignments_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        n = self._int(p, "NumberOfAdditionalAssignments", required=True, lo=1, hi=MAX_ASSIGNMENTS)
        token = self._str(p, "UniqueRequestToken", min_len=1, max_len=64)
        now = self.clock()
        if token is not None:
            seen = self._extra_tokens.get(token)
            if seen is not None and now - seen < TOKEN_LIFETIME_S:
                raise self._err(f'The idempotency token "{token}" has already been processed.',
                                "AWS.MechanicalTurk.DuplicateRequest")
        if hit.max_assignments < 10 <= hit.max_assignments + n:
            raise self._err("HITs created with fewer than 10 assignments cannot be extended to 10 or more.",
                            "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease")
        if token is not None:
            self._extra_tokens[token] = now
        hit.max_assignments += n
        self._schedule(hit, n, f"{hit.key}#extend{len(hit.assignments)}")
        self._advance()
        return {}

    def _op_delete_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        status = self._status(hit, self.clock())[0]
        # MTurk's answer, whether the state is wrong or some submitted work is not settled yet
        if status not in ("Reviewable", "Reviewing") or any(
                self._assignments[a].state == "Submitted" for a in hit.assignments):
            raise self._err(f"This HIT is currently in the state '{status}'.  This operation can be called with a "
                            "status of: Reviewing, Reviewable", "AWS.MechanicalTurk.InvalidHITState")
        hit.deleted = True
        return {}
