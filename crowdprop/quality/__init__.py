"""Quality control: golds, worker scores, answer aggregation (pure code, no I/O
except the CSV readers in :mod:`crowdprop.quality.aggregate`).

Answers use crowd-kit's long format, so they can be handed to crowd-kit as they are:
a DataFrame with columns ``task``, ``worker``, ``label`` (0/1, 1 = "yes, the mask is
correct"). Golds are a DataFrame with columns ``task``, ``label``.

Estimators (scikit-learn style: ``fit(answers, gold=None) -> self``; results in
``labels_``, ``probas_``, ``skills_``):

* :class:`MajorityVote` (:mod:`.mv`)
* :class:`OneCoinDawidSkene` (:mod:`.onecoin`): one accuracy per worker
* :class:`DawidSkene` (:mod:`.ds`): sensitivity and specificity per worker

Functions: :func:`aggregate`, :func:`read_answers_csv`, :func:`read_gold_csv`,
:func:`gold_scores`, :func:`beta_interval`, and the rules in :mod:`.rules`
(:class:`QualitySection`, :func:`judge_assignment`, :func:`passes_qualification`,
:func:`workers_to_block`,
:func:`choose_golds`, :func:`positions_for_golds`). Importing this package registers
the ``[quality]`` configuration table with :mod:`crowdprop.config`.
"""
from .aggregate import METHODS, aggregate, make_estimator, read_answers_csv, read_gold_csv, write_labels_csv
from .ds import DawidSkene
from .mv import MajorityVote
from .onecoin import OneCoinDawidSkene
from .rules import (QualitySection, Verdict, choose_golds, judge_assignment, passes_qualification,
                    positions_for_golds, workers_to_block)
from .scores import beta_interval, gold_scores

__all__ = [
    "METHODS", "aggregate", "make_estimator", "read_answers_csv", "read_gold_csv", "write_labels_csv",
    "DawidSkene", "MajorityVote", "OneCoinDawidSkene",
    "QualitySection", "Verdict", "choose_golds", "judge_assignment", "passes_qualification", "positions_for_golds", "workers_to_block",
    "beta_interval", "gold_scores",
]
