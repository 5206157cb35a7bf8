"""Figures of the campaign report, drawn with matplotlib's Agg backend.

Every function takes the per-round rows of :func:`crowdprop.report.summary.compute_report`
(``rep["rounds"]``, a list of dicts, one per committed round, in round order) and
returns PNG bytes; :func:`data_uri` turns them into an ``<img src>`` that needs no
file or network. Nothing here reads the run directory.

Curves (after the paper's figures, one point per round, log-log)
-----------------------------------------------------------------
accepted masks vs questions
    ``accepted`` against ``cum_questions`` (non-gold questions in usable work).
accepted clusters vs questions
    ``accepted_clusters`` against ``cum_questions``.
quality vs questions
    ``true_precision`` (replay) and ``est_precision`` with its interval.
"""
from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np

PALETTE = {"accepted": "#2e7d32", "rejected": "#c62828", "open": "#9e9e9e", "estimated": "#1565c0",
           "true": "#ef6c00", "grid": "#e0e0e0", "text": "#263238"}
"""Colors shared with the HTML page's stylesheet."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _style(ax) -> None:
    ax.grid(True, which="major", color=PALETTE["grid"], linewidth=0.8)
    ax.grid(True, which="minor", color=PALETTE["grid"], linewidth=0.4, alpha=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8, colors=PALETTE["text"])
    ax.title.set_fontsize(10)
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.label.set_fontsize(9)


def to_png(fig, *, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards); no timestamp, so the bytes
    depend only on the drawing."""
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` for an ``<img src>`` embedded in the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def plain_text(s: str) -> str:
    """``s`` as literal matplotlib text (``$`` would start mathtext)."""
    return str(s).replace("$", r"\$")


def _column(rounds: Sequence[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rounds], dtype=np.float64)


def _plain_log_axis(axis, fmt: str = "{:g}") -> None:
    """Log-scale tick labels as plain numbers (``300``, ``0.95``), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt.format(v)))
    axis.set_minor_formatter(NullFormatter())


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]


def _decades(v: np.ndarray) -> float:
    """How many powers of ten positive values span (0 for none)."""
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.log10(v.max() / v.min())) if len(v) else 0.0


def _estimate_limits(true: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, min_width: float = 0.1):
    """Axis limits of estimate-against-truth: the truth's own range, at least ``min_width`` wide,
    so that points whose true precision barely moves do not collapse to a strip at the edge of an
    axis drawn for the intervals; the estimate axis covers the intervals and the truth range."""
    c = (float(np.nanmin(true)) + float(np.nanmax(true))) / 2.0
    half = max((float(np.nanmax(true)) - float(np.nanmin(true))) / 2.0 + 0.02, min_width / 2.0)
    x0, x1 = max(c - half, 0.0), min(c + half, 1.005)
    y0 = max(min(float(np.nanmin(lo)), x0) - 0.02, 0.0)
    y1 = min(max(float(np.nanmax(hi)), x1) + 0.02, 1.005)
    return (x0, x1), (y0, y1)


def curves(rounds: Sequence[dict], *, replay: bool) -> bytes:
    """The three curves against questions asked, one point per round (log axes where the
    values span more than a decade).

    Parameters
    ----------
    rounds : sequence of dict, length n_rounds
        ``compute_report(run)["rounds"]``; uses ``cum_questions``, ``accepted``,
        ``accepted_clusters``, ``est_precision(_lo, _hi)`` and, when ``replay``,
        ``true_precision``.
    replay : bool
        Plot the true precision next to the estimate.

    Returns
    -------
    bytes
        A PNG of three panels side by side.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4), constrained_layout=True)
    q = _column(rounds, "cum_questions")
    panels = [("accepted", "accepted masks", PALETTE["accepted"]),
              ("accepted_clusters", "accepted clusters", PALETTE["estimated"])]
    for ax, (key, title, color) in zip(axes[:2], panels):
        x, y = _positive(q, _column(rounds, key))
        if len(x):
            ax.plot(x, y, "-o", color=color, markersize=3.5, linewidth=1.6)
            # log axes only over more than a decade: a short campaign (the sample) is a flat line on them
            if _decades(x) >= 1.0:
                ax.set_xscale("log")
                _plain_log_axis(ax.xaxis)
            if _decades(y) >= 1.0:
                ax.set_yscale("log")
                _plain_log_axis(ax.yaxis)
            else:
                ax.set_ylim(bottom=0, top=max(float(y.max()) * 1.1, 1.0))
        else:
            ax.text(0.5, 0.5, f"no {title} yet", ha="center", va="center", transform=ax.transAxes,
                    fontsize=9, color=PALETTE["open"])
        ax.set_title(f"{title} vs questions")
        ax.set_xlabel("questions asked (cumulative)")
        ax.set_ylabel(title)
        _style(ax)
    ax = axes[2]
    est, lo, hi = (_column(rounds, k) for k in ("est_precision", "est_precision_lo", "est_precision_hi"))
    ok = np.isfinite(q) & (q > 0) & np.isfinite(est)
    if ok.any():
        ax.fill_between(q[ok], lo[ok], hi[ok], color=PALETTE["estimated"], alpha=0.15, linewidth=0,
                        label="95% interval")
        ax.plot(q[ok], est[ok], "-o", color=PALETTE["estimated"], markersize=3.5, linewidth=1.6,
                label="estimated precision")
    if replay:
        tp = _column(rounds, "true_precision")
        okt = np.isfinite(q) & (q > 0) & np.isfinite(tp)
        if okt.any():
            ax.plot(q[okt], tp[okt], "-s", color=PALETTE["true"], markersize=3.5, linewidth=1.6,
                    label="true precision")
    if ok.any() or replay:
        if ok.any() and _decades(q[ok]) >= 1.0:
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)
        # the legend goes under the panel, where it cannot cover the interval band
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    ax.set_title("quality vs questions")
    ax.set_xlabel("questions asked (cumulative)")
    ax.set_ylabel("precision of accepted masks")
    _style(ax)
    return to_png(fig)


def true_vs_estimated(rounds: Sequence[dict]) -> bytes:
    """Replay: true and estimated precision of the accepted masks after each round.

    Parameters
    ----------
    rounds : sequence of dict, length n_rounds
        Uses ``round``, ``true_precision`` and ``est_precision(_lo, _hi)``.

    Returns
    -------
    bytes
        A PNG: both precisions per round (left) and estimated against true with
        the diagonal (right).
    """
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.2), constrained_layout=True)
    r = _column(rounds, "round")
    est, lo, hi, tp = (_column(rounds, k) for k in ("est_precision", "est_precision_lo", "est_precision_hi",
                                                     "true_precision"))
    ok = np.isfinite(est)
    a1.fill_between(r[ok], lo[ok], hi[ok], color=PALETTE["estimated"], alpha=0.15, linewidth=0,
                    label="95% interval")
    a1.plot(r[ok], est[ok], "-o", color=PALETTE["estimated"], markersize=3.5, label="estimated")
    okt = np.isfinite(tp)
    a1.plot(r[okt], tp[okt], "-s", color=PALETTE["true"], markersize=3.5, label="true")
    from matplotlib.ticker import MaxNLocator

    a1.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_xlabel("round")
    a1.set_ylabel("precision of accepted masks")
    a1.set_title("true and estimated precision per round")
    a1.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    _style(a1)
    both = ok & okt
    if both.any():
        a2.errorbar(tp[both], est[both], yerr=np.vstack([est[both] - lo[both], hi[both] - est[both]]).clip(0),
                    fmt="o", color=PALETTE["estimated"], ecolor="#90a4ae", markersize=3.5, capsize=2)
        xlim, ylim = _estimate_limits(tp[both], lo[both], hi[both])
        a2.plot([0, 1.01], [0, 1.01], "--", color=PALETTE["open"], linewidth=1)
        a2.set_xlim(xlim)
        a2.set_ylim(ylim)
    a2.set_xlabel("true precision")
    a2.set_ylabel("estimated precision")
    a2.set_title("estimate against truth")
    _style(a2)
    return to_png(fig)


def spend_per_round(rounds: Sequence[dict], *, budget_usd: float | None = None) -> bytes:
    """Dollars per round (bars) and cumulative dollars (line).

    Parameters
    ----------
    rounds : sequence of dict, length n_rounds
        Uses ``round``, ``usd`` and ``cum_usd``.
    budget_usd : float, optional
        Drawn as a dashed line when it is within 3x of the spend (else off the chart).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.0), constrained_layout=True)
    r = _column(rounds, "round")
    ax.bar(r, _column(rounds, "usd"), color="#90caf9", width=0.8, label="per round")
    ax2 = ax.twinx()
    cum = _column(rounds, "cum_usd")
    ax2.plot(r, cum, "-o", color=PALETTE["estimated"], markersize=3, label="cumulative")
    ax2.set_ylim(bottom=0)
    if budget_usd and len(cum) and np.nanmax(cum) * 3 >= budget_usd:
        ax2.axhline(budget_usd, color=PALETTE["rejected"], linestyle="--", linewidth=1, label="budget")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(r):
        ax.set_xlim(np.nanmin(r) - 0.6, np.nanmax(r) + 0.6)
    ax.set_xlabel("round")
    ax.set_ylabel("USD per round")
    ax2.set_ylabel("USD cumulative")
    ax.set_title("spend")
    _style(ax)
    ax2.spines["top"].set_visible(False)
    ax2.tick_params(labelsize=8)
    ax2.yaxis.label.set_fontsize(9)
    return to_png(fig)


def class_bars(names: Sequence[str], accepted, rejected, open_) -> bytes:
    """Stacked horizontal bars of accepted / rejected / open masks per class.

    Parameters
    ----------
    names : sequence of str, length n_classes
    accepted, rejected, open_ : array_like of int, shape (n_classes,)
    """
    plt = _pyplot()
    n = len(names)
    fig, ax = plt.subplots(figsize=(5.6, max(1.6, 0.2 * n + 0.8)), constrained_layout=True)
    y = np.arange(n)[::-1]
    left = np.zeros(n)
    for vals, key in ((accepted, "accepted"), (rejected, "rejected"), (open_, "open")):
        v = np.asarray(vals, dtype=np.float64)
        ax.barh(y, v, left=left, color=PALETTE[key], height=0.72, label=key)
        left = left + v
    ax.set_yticks(y)
    ax.set_yticklabels([plain_text(s) for s in names], fontsize=7.5)
    ax.set_xlabel("masks")
    ax.legend(fontsize=7.5, frameon=False, ncol=3, loc="lower right")
    _style(ax)
    ax.grid(False, axis="y")
    return to_png(fig)
