"""A local MTurk-compatible endpoint with simulated workers.

boto3's ``mturk`` client pointed at :func:`serve`'s URL (``endpoint_url=...``)
behaves as against MTurk: the same operations, errors, pagination, states and
money, with workers simulated from ground truth by a
:class:`~crowdprop.replay.workers.WorkerPool`, or a browser doing the HITs.
See :mod:`.service` for the semantics (and the modules :class:`LocalMTurk` is
assembled from: records, params, simulation, hits, assignments, worker_ops,
browser, over core's state), :mod:`.server` for the routes and :mod:`.auth` for
the SigV4 check of API calls.
"""
from .auth import Credentials
from .faults import FaultConfig
from .pages import answers_xml, html_question, page_questions, parse_answers_xml, question_page
from .server import Handle, serve
from .service import ASSIGNMENT_ID_NOT_AVAILABLE, SUPPORTED_OPERATIONS, LocalMTurk, ManualClock, MTurkError
from .truth import truth_from_coco, truth_from_masks, truth_from_run_dir

__all__ = [
    "ASSIGNMENT_ID_NOT_AVAILABLE", "Credentials", "FaultConfig", "Handle", "LocalMTurk", "ManualClock", "MTurkError",
    "SUPPORTED_OPERATIONS", "answers_xml", "html_question", "page_questions", "parse_answers_xml",
    "question_page", "serve", "truth_from_coco", "truth_from_masks", "truth_from_run_dir",
]
