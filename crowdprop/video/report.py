"""The video report: mIoU of the whole video against clicks (see :mod:`.crowd` for the click model)."""
from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text
from ..money import usd


def compute(vr) -> dict:
    """``{"rounds": [...], "total": {...}}`` from a run directory's committed rounds."""
    ms = vr.metrics()
    last = ms[-1]
    v = vr.config.video
    rounds = [{"round": m["round"], "clicks": m["clicks"], "clicks_share": m["clicks_share"], "miou": m["miou"],
               "miou_model": m["miou_model"], "cost_usd": usd(m["cents"]), "hits": m["hits"],
               "rejected": m["rejected"], "clicks_all": m["clicks_all"], "seconds": m.get("seconds", {})}
              for m in ms]
    total = {"rounds": last["round"], "frames": vr.campaign["frames"], "granularity": v.granularity,
             "method": v.method, "miou": last["miou"], "miou_start": ms[0]["miou"],
             "miou_manual": last["miou_manual"], "clicks": last["clicks"], "clicks_all": last["clicks_all"],
             "manual_clicks": last["manual_clicks"], "clicks_share": last["clicks_share"],
             "cost_usd": usd(last["cents"]), "cents": last["cents"], "hits": last["hits"],
             "rejected": last["rejected"]}
    return {"kind": "video", "total": total, "rounds": rounds}


def format_table(rep: dict) -> str:
    t = rep["total"]
    lines = [f"video: {t['frames']} frames, {t['granularity']} units, method {t['method']}",
             "round  clicks  share   mIoU   model mIoU  cost $  HITs  rejected"]
    for r in rep["rounds"]:
        miou = "-" if r["miou"] is None else f"{r['miou']:.3f}"
        mm = "-" if r["miou_model"] is None else f"{r['miou_model']:.3f}"
        lines.append(f"{r['round']:>5}  {r['clicks']:>6}  {r['clicks_share']:>5.1%}  {miou:>5}  {mm:>10}  "
                     f"{r['cost_usd']:>6.2f}  {r['hits']:>4}  {r['rejected']:>8}")
    manual = "-" if t["miou_manual"] is None else f"{t['miou_manual']:.3f}"
    lines.append(f"full manual labeling: {t['manual_clicks']} clicks, mIoU {manual} (one click per superpixel)")
    return "\n".join(lines)


def plot(rep: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [x for x in rep["rounds"] if x["miou"] is not None]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([100 * x["clicks_share"] for x in r], [x["miou"] for x in r], "o-", label=rep["total"]["method"])
    if rep["total"]["miou_manual"] is not None:
        ax.axhline(rep["total"]["miou_manual"], ls="--", c="k", lw=1, label="full manual")
    ax.set_xlabel("clicks, % of labeling every frame by hand")
    ax.set_ylabel("mIoU of the whole video")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(vr, rep: dict) -> Path:
    import json

    p = vr.path / "report.json"
    atomic_write_text(p, json.dumps(rep, indent=1) + "\n")
    return p
