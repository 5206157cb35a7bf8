"""One-coin Dawid-Skene: every worker has one accuracy, whatever the true label."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ._base import check_prior, check_tie_rule, clamp, encode, labels_from_probas, vote_share

log = logging.getLogger(__name__)


class OneCoinDawidSkene:
    r"""Binary one-coin Dawid-Skene model fitted by expectation-maximization.

    Each task :math:`t` has an unknown label :math:`z_t \in \{0, 1\}` with prior
    :math:`\pi = P(z_t = 1)`; worker :math:`w` answers correctly with probability
    :math:`a_w` whatever :math:`z_t` is (one coin per worker; Dawid and Skene's
    confusion matrix with one shared diagonal). With :math:`y_{wt}` the answer of
    :math:`w` to :math:`t`:

    E-step, the posterior of each task as a log-odds sum over its answers:

    .. math::

        \log\frac{q_t}{1-q_t} = \log\frac{\pi}{1-\pi}
            + \sum_{w \in W_t} (2 y_{wt} - 1) \log\frac{a_w}{1-a_w}

    M-step, with :math:`(\alpha, \beta)` = ``skill_prior`` pseudo-counts (MAP under a
    Beta(:math:`\alpha+1, \beta+1`) prior, which keeps :math:`a_w` strictly in (0, 1)):

    .. math::

        a_w = \frac{\alpha + \sum_{t \in T_w} [y_{wt} q_t + (1 - y_{wt})(1 - q_t)]}
                   {\alpha + \beta + |T_w|}, \qquad
        \pi = \frac{1 + \sum_{t \notin G} q_t}{2 + |\{t \notin G\}|}

    EM starts from the majority-vote shares (with ``gold``: from one E-step with
    each worker's smoothed accuracy on the golds they answered, majority-vote
    agreement for the others) and stops when no parameter moves by more than
    ``tol`` or after ``max_iter`` rounds. A worker with :math:`a_w < 1/2`
    (adversarial) gets a negative weight, so their answers count in reverse.

    With ``gold`` (tasks :math:`G` whose label is known), :math:`q_t` of a gold task
    is clamped to its label in every E-step: golds teach worker accuracies but do
    not enter the class prior (golds are usually picked yes/no-balanced, not
    representative).

    Parameters
    ----------
    max_iter : int
        Most EM rounds.
    tol : float
        Convergence: largest change of any :math:`a_w` or :math:`\pi` in a round.
    skill_prior : (float, float)
        Pseudo-counts (correct, wrong) added to each worker's tally; both > 0.
    on_tie : {"no", "yes", "random"}
        Label of a task whose posterior is exactly 0.5 (see
        :class:`~crowdprop.quality.mv.MajorityVote`).
    random_state : int or numpy.random.Generator or None
        Seed for ``on_tie="random"``; EM itself is deterministic.

    Attributes
    ----------
    labels_ : Series, task -> {0, 1}
    probas_ : Series, task -> :math:`q_t = P(z_t = 1 \mid \text{answers})`
    skills_ : Series, worker -> :math:`a_w`
    prior_ : float, :math:`\pi`
    log_likelihood_ : float, log P(answers) under the fitted parameters
    n_iter_ : int, EM rounds run
    converged_ : bool

    References
    ----------
    A. P. Dawid and A. M. Skene, "Maximum likelihood estimation of observer
    error-rates using the EM algorithm", Journal of the Royal Statistical Society C,
    28(1):20-28, 1979. The one-coin restriction follows Y. Zhang, X. Chen, D. Zhou,
    M. I. Jordan, "Spectral methods meet EM", NeurIPS 2014.

    Examples
    --------
    >>> import pandas as pd
    >>> answers = pd.DataFrame({"task": [1, 1, 1, 2, 2, 2], "worker": list("abcabc"),
    ...                         "label": [1, 1, 0, 0, 0, 1]})
    >>> OneCoinDawidSkene().fit(answers).labels_.tolist()
    [1, 0]
    """

    def __init__(self, *, max_iter: int = 200, tol: float = 1e-6,
                 skill_prior: tuple[float, float] = (1.0, 1.0), on_tie: str = "no",
                 random_state=None):
        self.max_iter = max_iter
        self.tol = tol
        self.skill_prior = skill_prior
        self.on_tie = on_tie
        self.random_state = random_state

    def fit(self, data: pd.DataFrame, gold: pd.DataFrame | pd.Series | None = None) -> "OneCoinDawidSkene":
        """Fit on answers ``data`` (columns task, worker, label) and optional ``gold``
        (columns task, label, or a Series task -> label)."""
        check_tie_rule(self.on_tie)
        a0, b0 = check_prior(self.skill_prior, "skill_prior")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        enc = encode(data, gold)
        t, w, y = enc.t, enc.w, enc.y
        yes = y == 1
        free = ~enc.gold_mask
        n_free = int(free.sum())
        n_w = np.bincount(w, minlength=enc.n_workers).astype(float)

        q = clamp(vote_share(enc), enc)
        if enc.gold_mask.any():
            # start from accuracies on golds, so golds can overrule a wrong majority
            on_gold = enc.gold_mask[t]
            qt = q[t]
            correct = np.where(yes, qt, 1.0 - qt)
            acc_mv = (np.bincount(w, weights=correct, minlength=enc.n_workers) + a0) / (n_w + a0 + b0)
            n_g = np.bincount(w[on_gold], minlength=enc.n_workers)
            c_g = np.bincount(w[on_gold], weights=correct[on_gold], minlength=enc.n_workers)
            acc0 = np.where(n_g > 0, (c_g + a0) / (n_g + a0 + b0), acc_mv)
            q, _ = self._posterior(enc, acc0, (1.0 + q[free].sum()) / (2.0 + n_free))
        acc = np.full(enc.n_workers, 0.5)
        prior = 0.5
        converged = False
        it = 0
        for it in range(1, self.max_iter + 1):
            # M-step
            qt = q[t]
            correct = np.where(yes, qt, 1.0 - qt)
            new_acc = (np.bincount(w, weights=correct, minlength=enc.n_workers) + a0) / (n_w + a0 + b0)
            new_prior = (1.0 + q[free].sum()) / (2.0 + n_free)
            delta = max(float(np.max(np.abs(new_acc - acc))), abs(new_prior - prior))
            acc, prior = new_acc, new_prior
            # E-step
            q, ll = self._posterior(enc, acc, prior)
            if delta < self.tol:
                converged = True
                break
        if not converged:
            log.warning("one-coin Dawid-Skene did not converge in %d rounds (tol %g)", self.max_iter, self.tol)
        self.probas_ = pd.Series(q, index=enc.tasks.rename("task"), name="proba")
        self.labels_ = pd.Series(labels_from_probas(q, self.on_tie, self.random_state),
                                 index=enc.tasks.rename("task"), name="label")
        self.skills_ = pd.Series(acc, index=enc.workers.rename("worker"), name="skill")
        self.prior_ = float(prior)
        self.log_likelihood_ = float(ll)
        self.n_iter_ = it
        self.converged_ = converged
        return self

    @staticmethod
    def _posterior(enc, acc: np.ndarray, prior: float) -> tuple[np.ndarray, float]:
        """E-step: (q, log-likelihood) from accuracies ``acc`` (n_workers,) and prior.

        The one-coin model is Dawid-Skene with sensitivity = specificity = accuracy."""
        from .ds import DawidSkene

        return DawidSkene._posterior(enc, acc, acc, prior)

    def fit_predict(self, data: pd.DataFrame, gold=None) -> pd.Series:
        return self.fit(data, gold).labels_

    def fit_predict_proba(self, data: pd.DataFrame, gold=None) -> pd.Series:
        return self.fit(data, gold).probas_
