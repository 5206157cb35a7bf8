"""Majority vote over binary answers."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._base import check_prior, check_tie_rule, clamp, encode, labels_from_probas, vote_share


class MajorityVote:
    r"""Majority vote: each task gets the label most of its workers gave.

    .. math::

        p_t = \frac{1}{|W_t|} \sum_{w \in W_t} y_{wt}, \qquad
        \hat y_t = \begin{cases} 1 & p_t > 1/2 \\ 0 & p_t < 1/2 \\
        \text{tie rule} & p_t = 1/2 \end{cases}

    where :math:`W_t` is the set of answers to task :math:`t`. The share of "yes"
    answers :math:`p_t` is reported as the probability; a tie gives exactly 0.5.
    A worker's skill is the share of their answers that agree with the final labels,
    smoothed by ``skill_prior`` pseudo-counts so it stays strictly inside (0, 1).

    Parameters
    ----------
    on_tie : {"no", "yes", "random"}
        Label of a task with as many "yes" as "no" answers. ``"no"`` (default) is
        conservative: a mask is called correct only by a strict majority.
        ``"random"`` flips a fair coin per tied task, seeded by ``random_state``.
    skill_prior : (float, float)
        Pseudo-counts (agree, disagree) added to every worker's tally.
    random_state : int or numpy.random.Generator or None
        Seed for ``on_tie="random"``.

    Attributes
    ----------
    labels_ : Series, task -> {0, 1}
    probas_ : Series, task -> share of "yes" answers (known label for gold tasks)
    skills_ : Series, worker -> smoothed agreement with ``labels_``

    Notes
    -----
    With ``gold``, gold tasks are clamped to their known label (probability 0 or 1);
    the other tasks are unaffected, since majority vote does not weigh workers.
    """

    def __init__(self, *, on_tie: str = "no", skill_prior: tuple[float, float] = (1.0, 1.0),
                 random_state=None):
        self.on_tie = on_tie
        self.skill_prior = skill_prior
        self.random_state = random_state

    def fit(self, data: pd.DataFrame, gold: pd.DataFrame | pd.Series | None = None) -> "MajorityVote":
        """Fit on answers ``data`` (columns task, worker, label) and optional ``gold``."""
        check_tie_rule(self.on_tie)
        a0, b0 = check_prior(self.skill_prior, "skill_prior")
        enc = encode(data, gold)
        p = clamp(vote_share(enc), enc)
        labels = labels_from_probas(p, self.on_tie, self.random_state)
        agree = (labels[enc.t] == enc.y).astype(float)
        n_w = np.bincount(enc.w, minlength=enc.n_workers)
        c_w = np.bincount(enc.w, weights=agree, minlength=enc.n_workers)
        self.probas_ = pd.Series(p, index=enc.tasks.rename("task"), name="proba")
        self.labels_ = pd.Series(labels, index=enc.tasks.rename("task"), name="label")
        self.skills_ = pd.Series((c_w + a0) / (n_w + a0 + b0), index=enc.workers.rename("worker"),
                                 name="skill")
        return self

    def fit_predict(self, data: pd.DataFrame, gold=None) -> pd.Series:
        return self.fit(data, gold).labels_
