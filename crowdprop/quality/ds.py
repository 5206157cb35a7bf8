"""Dawid-Skene with a full 2 x 2 confusion matrix per worker (binary labels)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ._base import check_prior, check_tie_rule, clamp, encode, labels_from_probas, vote_share

log = logging.getLogger(__name__)


class DawidSkene:
    r"""Binary Dawid-Skene model fitted by expectation-maximization.

    Each task :math:`t` has an unknown label :math:`z_t \in \{0, 1\}` with prior
    :math:`\pi = P(z_t = 1)`. Worker :math:`w` has a 2 x 2 confusion matrix, written
    as two numbers: sensitivity :math:`s_w = P(y = 1 \mid z = 1)` and specificity
    :math:`c_w = P(y = 0 \mid z = 0)`. A worker who says "yes" to everything has
    :math:`s_w \approx 1, c_w \approx 0` and so carries no weight, which the
    one-coin model cannot express.

    E-step, with :math:`y_{wt}` the answer of :math:`w` to :math:`t`:

    .. math::

        \log\frac{q_t}{1-q_t} = \log\frac{\pi}{1-\pi} + \sum_{w \in W_t}
            \Big[ y_{wt} \log\frac{s_w}{1-c_w} + (1-y_{wt}) \log\frac{1-s_w}{c_w} \Big]

    M-step, with :math:`(\alpha, \beta)` = ``skill_prior`` pseudo-counts that keep
    every rate strictly inside (0, 1):

    .. math::

        s_w = \frac{\alpha + \sum_{t \in T_w} y_{wt} q_t}{\alpha + \beta + \sum_{t \in T_w} q_t},
        \qquad
        c_w = \frac{\alpha + \sum_{t \in T_w} (1-y_{wt})(1-q_t)}{\alpha + \beta + \sum_{t \in T_w} (1-q_t)},
        \qquad
        \pi = \frac{1 + \sum_{t \notin G} q_t}{2 + |\{t \notin G\}|}

    EM starts from the majority-vote shares (with ``gold``: from one E-step with
    each worker's smoothed rates on the golds they answered, majority-vote rates
    for workers without golds) and stops when no parameter moves by more than
    ``tol`` or after ``max_iter`` rounds. With ``gold`` (tasks :math:`G`
    whose label is known), :math:`q_t` of a gold task is clamped to its label in
    every E-step; golds teach the confusion matrices but not the class prior.

    Parameters
    ----------
    max_iter, tol, skill_prior, on_tie, random_state
        As in :class:`~crowdprop.quality.onecoin.OneCoinDawidSkene`.

    Attributes
    ----------
    labels_ : Series, task -> {0, 1}
    probas_ : Series, task -> :math:`q_t = P(z_t = 1 \mid \text{answers})`
    skills_ : Series, worker -> accuracy on a random task,
        :math:`\pi s_w + (1 - \pi) c_w`
    sensitivity_ : Series, worker -> :math:`s_w`
    specificity_ : Series, worker -> :math:`c_w`
    prior_ : float, :math:`\pi`
    log_likelihood_ : float, log P(answers) under the fitted parameters
    n_iter_ : int
    converged_ : bool

    References
    ----------
    A. P. Dawid and A. M. Skene, "Maximum likelihood estimation of observer
    error-rates using the EM algorithm", Journal of the Royal Statistical Society C,
    28(1):20-28, 1979.
    """

    def __init__(self, *, max_iter: int = 200, tol: float = 1e-6,
                 skill_prior: tuple[float, float] = (1.0, 1.0), on_tie: str = "no",
                 random_state=None):
        self.max_iter = max_iter
        self.tol = tol
        self.skill_prior = skill_prior
        self.on_tie = on_tie
        self.random_state = random_state

    def fit(self, data: pd.DataFrame, gold: pd.DataFrame | pd.Series | None = None) -> "DawidSkene":
        """Fit on answers ``data`` (columns task, worker, label) and optional ``gold``."""
        check_tie_rule(self.on_tie)
        a0, b0 = check_prior(self.skill_prior, "skill_prior")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        enc = encode(data, gold)
        t, w, y = enc.t, enc.w, enc.y.astype(float)
        free = ~enc.gold_mask
        n_free = int(free.sum())
        nw = enc.n_workers

        q = clamp(vote_share(enc), enc)
        if enc.gold_mask.any():
            # start from the rates on golds, so golds can overrule a wrong majority
            g = enc.gold_mask[t]
            sens_mv, spec_mv = self._m_step(w, y, q[t], nw, a0, b0)
            sens_g, spec_g = self._m_step(w[g], y[g], q[t][g], nw, a0, b0)
            n_g = np.bincount(w[g], minlength=nw)
            q, _ = self._posterior(enc, np.where(n_g > 0, sens_g, sens_mv), np.where(n_g > 0, spec_g, spec_mv),
                                   (1.0 + q[free].sum()) / (2.0 + n_free))
        sens = np.full(nw, 0.5)
        spec = np.full(nw, 0.5)
        prior = 0.5
        converged = False
        it = 0
        for it in range(1, self.max_iter + 1):
            # M-step
            new_sens, new_spec = self._m_step(w, y, q[t], nw, a0, b0)
            new_prior = (1.0 + q[free].sum()) / (2.0 + n_free)
            delta = max(float(np.max(np.abs(new_sens - sens))), float(np.max(np.abs(new_spec - spec))),
                        abs(new_prior - prior))
            sens, spec, prior = new_sens, new_spec, new_prior
            # E-step
            q, ll = self._posterior(enc, sens, spec, prior)
            if delta < self.tol:
                converged = True
                break
        if not converged:
            log.warning("Dawid-Skene did not converge in %d rounds (tol %g)", self.max_iter, self.tol)
        workers = enc.workers.rename("worker")
        self.probas_ = pd.Series(q, index=enc.tasks.rename("task"), name="proba")
        self.labels_ = pd.Series(labels_from_probas(q, self.on_tie, self.random_state),
                                 index=enc.tasks.rename("task"), name="label")
        self.sensitivity_ = pd.Series(sens, index=workers, name="sensitivity")
        self.specificity_ = pd.Series(spec, index=workers, name="specificity")
        self.skills_ = pd.Series(prior * sens + (1.0 - prior) * spec, index=workers, name="skill")
        self.prior_ = float(prior)
        self.log_likelihood_ = float(ll)
        self.n_iter_ = it
        self.converged_ = converged
        return self

    @staticmethod
    def _m_step(w: np.ndarray, y: np.ndarray, qt: np.ndarray, nw: int, a0: float, b0: float):
        """Sensitivity and specificity, shape (nw,), from answers (w, y) and q of their tasks."""
        pos = np.bincount(w, weights=qt, minlength=nw)
        neg = np.bincount(w, weights=1.0 - qt, minlength=nw)
        sens = (np.bincount(w, weights=y * qt, minlength=nw) + a0) / (pos + a0 + b0)
        spec = (np.bincount(w, weights=(1.0 - y) * (1.0 - qt), minlength=nw) + a0) / (neg + a0 + b0)
        return sens, spec

    @staticmethod
    def _posterior(enc, sens: np.ndarray, spec: np.ndarray, prior: float) -> tuple[np.ndarray, float]:
        """E-step: (q, log-likelihood) from per-worker sensitivity, specificity and prior."""
        yes = enc.y == 1
        ls, l1s = np.log(sens)[enc.w], np.log1p(-sens)[enc.w]
        lc, l1c = np.log(spec)[enc.w], np.log1p(-spec)[enc.w]
        ll1 = np.log(prior) + np.bincount(enc.t, weights=np.where(yes, ls, l1s), minlength=enc.n_tasks)
        ll0 = np.log1p(-prior) + np.bincount(enc.t, weights=np.where(yes, l1c, lc), minlength=enc.n_tasks)
        norm = np.logaddexp(ll1, ll0)
        q = np.exp(ll1 - norm)
        if enc.gold_mask.any():
            g = enc.gold_mask
            norm[g] = np.where(enc.gold_label[g] == 1, ll1[g], ll0[g])
            clamp(q, enc)
        return q, float(norm.sum())

    def fit_predict(self, data: pd.DataFrame, gold=None) -> pd.Series:
        return self.fit(data, gold).labels_

    def fit_predict_proba(self, data: pd.DataFrame, gold=None) -> pd.Series:
        return self.fit(data, gold).probas_
