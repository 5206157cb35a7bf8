"""What a requester does about workers at the local endpoint: qualification types
(CreateQualificationType, GetQualificationType, ListQualificationTypes), qualification grants
(AssociateQualificationWithWorker, DisassociateQualificationFromWorker,
ListWorkersWithQualificationType, GetQualificationScore) and worker blocks
(CreateWorkerBlock, DeleteWorkerBlock, ListWorkerBlocks).

A qualification type's ``Test`` and ``AnswerKey`` are parsed and checked when it is created
(:mod:`.qualification`); simulated workers take the test when a HIT requires it
(:mod:`.simulation`), a person in a browser through :mod:`.browser`.
"""
from __future__ import annotations

from typing import Mapping

from .params import ParamChecks
from .qualification import QualificationXMLError, parse_answer_key, parse_test
from .records import MAX_LIFETIME_S


class WorkerOperations(ParamChecks):
    """The qualification and worker block operations."""

    def _op_create_qualification_type(self, p: Mapping) -> dict:
        name = self._str(p, "Name", required=True, min_len=1, max_len=128)
        desc = self._str(p, "Description", required=True, max_len=2000)
        status = self._str(p, "QualificationTypeStatus", required=True)
        if status not in ("Active", "Inactive"):
            raise self._err(f"QualificationTypeStatus {status} is invalid.", "AWS.ParameterOutOfRange")
        test = self._str(p, "Test")  # sizes (64 KB) are checked in bytes by the parsers
        answer_key = self._str(p, "AnswerKey")
        auto = bool(p.get("AutoGranted", False))
        duration = self._int(p, "TestDurationInSeconds", lo=1, hi=MAX_LIFETIME_S)
        self._int(p, "RetryDelayInSeconds", lo=0, hi=MAX_LIFETIME_S)
        parsed = None
        if test is not None:
            if auto:
                raise self._err("AutoGranted cannot be true when a Test is given.", "AWS.ParameterOutOfRange")
            if duration is None:
                raise self._err("TestDurationInSeconds is required with a Test.", "AWS.MissingParameters")
            try:
                questions = parse_test(test)
                key = parse_answer_key(answer_key, questions) if answer_key is not None else None
            except QualificationXMLError as e:
                raise self._err(str(e), "AWS.MechanicalTurk.XMLParseError") from None
            parsed = (questions, key)
        elif answer_key is not None:
            raise self._err("An AnswerKey needs a Test.", "AWS.ParameterOutOfRange")
        elif duration is not None:
            raise self._err("TestDurationInSeconds needs a Test.", "AWS.ParameterOutOfRange")
        if any(q["Name"] == name for q in self._qual_types.values()):
            raise self._err("You have already created a QualificationType with this name. A QualificationType's name "
                            "must be unique among all of the QualificationTypes created by the same user.",
                            "AWS.MechanicalTurk.QualificationTypeAlreadyExists")
        qid = self._new_id("qualification")
        q = {"QualificationTypeId": qid, "CreationTime": self.clock(), "Name": name, "Description": desc,
             "QualificationTypeStatus": status, "IsRequestable": bool(test is not None or auto),
             "AutoGranted": auto}
        for k in ("Keywords", "RetryDelayInSeconds", "Test", "AnswerKey", "TestDurationInSeconds"):
            if p.get(k) is not None:
                q[k] = p[k]
        if q["AutoGranted"]:
            q["AutoGrantedValue"] = int(p.get("AutoGrantedValue", 1))
        self._qual_types[qid] = q
        if parsed is not None:
            self._tests[qid] = parsed
        return {"QualificationType": dict(q)}

    def _op_list_qualification_types(self, p: Mapping) -> dict:
        if not isinstance(p.get("MustBeRequestable"), bool):
            raise self._err("Parameter MustBeRequestable is required.", "AWS.MissingParameters")
        query = (self._str(p, "Query", max_len=1000) or "").lower()
        rows = [q for q in self._qual_types.values()
                if (not p["MustBeRequestable"] or q["IsRequestable"])
                and (not query or any(query in str(q.get(k, "")).lower() for k in ("Name", "Description", "Keywords")))]
        items = [(i, dict(q)) for i, q in enumerate(sorted(rows, key=lambda q: q["CreationTime"]))]
        page, nxt = self._page("qualtypes", items, p)
        out = {"NumResults": len(page), "QualificationTypes": page}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_get_qualification_score(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        rec = self._quals.get((q["QualificationTypeId"], worker))
        if rec is None:
            raise self._err("You requested a Qualification that does not exist.",
                            "AWS.MechanicalTurk.QualificationDoesNotExist")
        return {"Qualification": dict(rec)}

    def _op_get_qualification_type(self, p: Mapping) -> dict:
        return {"QualificationType": dict(self._qual_type(p))}

    def _qual_type(self, p: Mapping) -> dict:
        qid = self._entity(p, "QualificationTypeId")
        q = self._qual_types.get(qid)
        if q is None:
            raise self._err(f"QualificationType {qid} does not exist.",
                            "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
        return q

    def _op_associate_qualification_with_worker(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        value = self._int(p, "IntegerValue", default=1)
        self._quals[(q["QualificationTypeId"], worker)] = {
            "QualificationTypeId": q["QualificationTypeId"], "WorkerId": worker, "GrantTime": self.clock(),
            "IntegerValue": value, "Status": "Granted"}
        return {}

    def _op_disassociate_qualification_from_worker(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        rec = self._quals.get((q["QualificationTypeId"], worker))
        if rec is None or rec["Status"] != "Granted":
            raise self._err(f"Worker {worker} does not have a qualification of type {q['QualificationTypeId']}.",
                            "AWS.MechanicalTurk.QualificationDoesNotExist")
        rec["Status"] = "Revoked"
        return {}

    def _op_list_workers_with_qualification_type(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        status = p.get("Status")
        rows = [r for (qt, _), r in self._quals.items() if qt == q["QualificationTypeId"]
                and (r["Status"] == status if status else r["Status"] == "Granted")]
        page, nxt = self._page("quals", list(enumerate(rows)), p)
        out = {"NumResults": len(page), "Qualifications": [dict(r) for r in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_create_worker_block(self, p: Mapping) -> dict:
        worker = self._worker(p)
        self._blocks[worker] = self._str(p, "Reason", required=True, min_len=1, max_len=1024)
        return {}

    def _op_delete_worker_block(self, p: Mapping) -> dict:
        self._blocks.pop(self._worker(p), None)
        return {}

    def _op_list_worker_blocks(self, p: Mapping) -> dict:
        rows = [{"WorkerId": w, "Reason": r} for w, r in self._blocks.items()]
        page, nxt = self._page("blocks", list(enumerate(rows)), p)
        out = {"NumResults": len(page), "WorkerBlocks": page}
        if nxt:
            out["NextToken"] = nxt
        return out
