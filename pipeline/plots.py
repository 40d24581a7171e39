"""The report's figures (matplotlib, PNG): each takes a small table and writes one picture.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (no pyplot): no global state and no GUI
backend, so they are safe in any process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.manifest import atomic_path
from pipeline.render import family_colour

__all__ = ["uncertainty_hist", "label_reference_distance", "model_reference_distance", "ced_curves", "nmf_scatter",
           "train_loss"]

_SUBSET_COLOURS = {"hard": "#d62728", "easy": "#2ca02c", "middle": "#7f7f7f"}


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)
    return out


def uncertainty_hist(scores: pd.DataFrame, out: str | Path) -> Path:
    """Histogram of the scored videos' uncertainty by subset, with the hard and easy selection thresholds."""
    ok = scores[scores.status == "ok"].copy()
    if ok.empty:
        raise ValueError("no scored video")
    ok["group"] = ok.subset.fillna("middle")
    fig = Figure(figsize=(6, 3.4))
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(ok.uncertainty, bins=min(30, max(5, len(ok) // 2))).tolist()
    groups = [g for g in ("easy", "middle", "hard") if (ok.group == g).any()]
    ax.hist([ok.uncertainty[ok.group == g] for g in groups], bins=bins, stacked=True,
            color=[_SUBSET_COLOURS[g] for g in groups], label=[f"{g} ({(ok.group == g).sum()})" for g in groups])
    if (ok.group == "hard").any():
        hard_min = ok.uncertainty[ok.group == "hard"].min()
        ax.axvline(hard_min, color=_SUBSET_COLOURS["hard"], ls="--", label=f"hard ≥ {hard_min:.3f}")
    if (ok.group == "easy").any():
        easy_max = ok.uncertainty[ok.group == "easy"].max()
        ax.axvline(easy_max, color=_SUBSET_COLOURS["easy"], ls="--", label=f"easy ≤ {easy_max:.3f}")
    ax.set(xlabel="video uncertainty (score)", ylabel="videos",
           title="Uncertainty of the scored videos and the selection")
    ax.legend(fontsize=8)
    return _save(fig, out)


def label_reference_distance(distance: pd.DataFrame, out: str | Path) -> Path:
    """Bars: the consensus labels' distance (%) to the demo's model reference per difficulty level (``difficulty,
    frames, reference_distance``). The reference is model output (dlib + MediaPipe mesh on the clean stills), not
    truth, and the title says so."""
    if distance.empty:
        raise ValueError("no labelled frame with a model reference")
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    bars = ax.bar(np.arange(len(distance)), distance.reference_distance, color="#4c72b0")
    ax.set_xticks(np.arange(len(distance)), [str(v) for v in distance.difficulty])
    ax.bar_label(bars, labels=[f"{v:.2f}\n({n} fr)" for v, n in zip(distance.reference_distance, distance.frames)],
                 fontsize=8)
    ax.set(xlabel="demo difficulty level", ylabel="distance to the reference (% inter-ocular)",
           title="Consensus labels vs the demo's model reference\n(dlib + mesh output, not truth)")
    ax.margins(y=0.25)
    return _save(fig, out)


def model_reference_distance(per_model: pd.DataFrame, out: str | Path) -> Path:
    """Grouped bars: distance (%) to the demo's model reference per model (and the consensus) per difficulty level
    (``model, family, difficulty, reference_distance``)."""
    if per_model.empty:
        raise ValueError("no model output with a model reference")
    levels = sorted(per_model.difficulty.unique())
    models = list(dict.fromkeys(per_model.model))
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        rows = per_model[per_model.model == model].set_index("difficulty")
        family = rows.family.iloc[0]
        colour = "#222222" if family == "consensus" else tuple(c / 255 for c in family_colour(family))
        ax.bar(np.arange(len(levels)) + (i - (len(models) - 1) / 2) * width,
               [rows.reference_distance.get(level, np.nan) for level in levels], width, label=model, color=colour,
               edgecolor="black", linewidth=0.4)
    ax.set_xticks(np.arange(len(levels)), [str(v) for v in levels])
    ax.set(xlabel="demo difficulty level", ylabel="distance to the reference (% inter-ocular)",
           title="Each model vs the demo's model reference (points it defines;\nthe reference is dlib + mesh output)")
    ax.legend(fontsize=7, ncol=min(len(models), 4), loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _save(fig, out)


def ced_curves(ced: pd.DataFrame, out: str | Path) -> Path:
    """Cumulative error distribution of LDEQ on the hard frames (``nme`` plus one column per method)."""
    methods = [c for c in ced.columns if c != "nme"]
    if ced.empty or not methods:
        raise ValueError("empty CED table")
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    for method in methods:
        ax.plot(ced.nme, ced[method], label="from scratch" if method == "scratch" else method)
    ax.set_xlabel("NME (fraction of inter-ocular distance)")
    ax.set_ylabel("share of frames")
    ax.set_ylim(0, 1)
    if not (ced[methods].to_numpy() > 0).any():  # an empty-looking plot needs saying why
        ax.text(0.5, 0.5, f"no frame has NME below {ced.nme.max():.2f}", transform=ax.transAxes, ha="center")
    ax.set_title("CED, hard subset frames")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def nmf_scatter(per_video: pd.DataFrame, out: str | Path) -> Path:
    """NMF per video: from scratch (``none``) against RwR, one point per video coloured by subset."""
    wide = per_video.pivot_table(index=["video_id", "subset"], columns="method", values="nmf").reset_index()
    if wide.empty or not {"none", "rwr"} <= set(wide.columns):
        raise ValueError("per-video NMF table has no 'none' and 'rwr' methods")
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot()
    for subset, rows in wide.groupby("subset"):
        ax.scatter(rows["none"], rows["rwr"], s=18, label=str(subset), color=_SUBSET_COLOURS.get(str(subset)))
    top = float(np.nanmax(wide[["none", "rwr"]].to_numpy())) * 1.05
    ax.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="equal")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set(xlabel="NMF from scratch", ylabel="NMF with RwR", title="Flicker per video (below the line: RwR helps)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def train_loss(history: pd.DataFrame, out: str | Path) -> Path:
    """Training loss per epoch (``epoch, loss``)."""
    if history.empty:
        raise ValueError("empty training history")
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.plot(history.epoch, history.loss, marker="o" if len(history) < 30 else None)
    ax.set(xlabel="epoch", ylabel="loss", title="LDEQ training loss")
    ax.grid(alpha=0.3)
    return _save(fig, out)
