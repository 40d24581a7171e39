"""Evaluate an LDEQ checkpoint on a built dataset: every annotated video from scratch and with RwR, plus smoothers.

Methods: ``none`` (every frame from scratch), ``ema`` and ``one_euro`` (filters on ``none``), ``rwr`` (the released
code's warm start, γ = 0, with z*_{t−1} resampled into the current crop unless ``rwr_align`` is off) and ``rwr_prox``
(warm start + proximal anchor, γ tuned). Filter constants and γ are tuned on easy videos only. The hard subset also
gets ``ema_hard_tuned`` and ``one_euro_hard_tuned``: the filters tuned on the hard videos themselves, an optimistic
bound for a hand-tuned filter. With ``frame0_full_solve`` and ``rwr_align`` off, ``rwr`` is the released protocol
(``test_LDEQ_WFLW_V.py``: ``rwr_max_iters`` for every frame, z*_{t−1} reused as is).

The checkpoint is a folder written by the train stage (``config.json`` + ``checkpoint.pt``) or a released
``final.pth.tar`` (:func:`ldeq.checkpoint.load_checkpoint`). Writes the DVC metrics, a few scalars per file so that
``dvc metrics show`` stays a readable table (``<scalars>/<subset>/<method>.json``: video NME, NMF and the number of
videos), the whole results as plain JSON (image NME/FR/AUC on the hard frames, ratios to ``none``, tuned constants,
RwR cost, which checkpoint) and DVC plots (CED curve, per-video NMF).

Every figure of the whole results carries a 95 % percentile bootstrap interval over videos (``*_ci``; the ratios to
``none`` paired: each resample scores every method on the same videos), so a reader sees whether a gain such as RwR's
NMF ratio on a dozen demo videos is more than the spread between videos. With ``models.determinism: exact`` predictions
run under :func:`ldeq.infer.exact_cpu_kernels`: the same checkpoint and annotations give the same figures on every
x86-64 machine.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ldeq.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from ldeq.evaluate import TAUS, subset_summary
from ldeq.evaluate import score_video as score_standalone
from ldeq.infer import RwR, exact_cpu_kernels, predict_video
from ldeq.metrics import ced, fr_auc, nme
from ldeq.video_eval import VideoScores, apply_filter, objective, score_video, summarize, tune_filter
from pipeline.cli import TIMINGS_DIR
from pipeline.cluster import map_videos, worker_cached
from pipeline.kernels import model_determinism
from pipeline.manifest import (
    ManifestError,
    atomic_path,
    boxes_array,
    points_array,
    read_table,
    rows_by_video,
    sha256_file,
    write_json,
)
from pipeline.params import ClusterParams, EvaluateParams, ParamsError
from pipeline.schemas import error_status, valid_flags
from pipeline.video import iter_frames

__all__ = ["BOOTSTRAP", "bootstrap_intervals", "evaluate_checkpoint", "evaluation_checkpoint", "rwr_settings",
           "write_scalar_metrics"]

log = logging.getLogger(__name__)

#: How each figure's confidence interval is drawn: percentile bootstrap over videos, this many resamples, this
#: coverage, from this seed (fixed: the same intervals on every run and machine).
BOOTSTRAP: dict[str, float] = {"resamples": 1000, "confidence": 0.95, "seed": 0}


def evaluation_checkpoint(params: EvaluateParams, default: str | Path) -> tuple[Path, Path]:
    """The checkpoint to evaluate (``params.checkpoint``, or ``default``: the train stage's folder) and its weights
    file; a checkpoint that cannot be loaded is a :class:`ParamsError` (set in params) or :class:`ManifestError`
    (the train stage's output), one line naming the file and the key."""
    path = Path(params.checkpoint) if params.checkpoint else Path(default)
    try:
        weights = resolve_checkpoint(path)
        load_checkpoint(path)  # fail here, once, rather than in every worker
    except CheckpointError as err:
        if params.checkpoint:
            raise ParamsError(f"evaluate.checkpoint: {err}") from None
        raise ManifestError(str(err)) from None
    return path, weights


def rwr_settings(params: EvaluateParams) -> RwR:
    """The RwR settings of ``params``, γ = 0 (the released code's): each γ of the grid is this value with its γ."""
    return RwR(iters=params.rwr_iters, frame0_full_solve=params.frame0_full_solve, align=params.rwr_align, gamma=0.0)


def _videos(annotations: Path, clips: Path, max_videos: int | None) -> list[dict[str, Any]]:
    """One item per annotated video: subset, clip path, fps, ground truth (F, 98, 2) and boxes (F, 4)."""
    clip_rows = {r["video_id"]: r for r in read_table(clips, "clips").to_pylist()}
    items = []
    for vid, rows in rows_by_video(read_table(annotations, "annotations")).items():
        start, stop = _longest_valid_run(rows)
        if stop - start < 2:
            log.warning("evaluate: %s has no two consecutive valid frames; not evaluated", vid)
            continue
        rows = rows.slice(start, stop - start)
        items.append({"video_id": vid, "subset": rows.column("subset")[0].as_py(), "path": clip_rows[vid]["path"],
                      "fps": clip_rows[vid]["fps"], "gt": points_array(rows.column("landmarks")),
                      "boxes": boxes_array(rows), "start": int(rows.column("frame")[0].as_py())})
    return items[:max_videos] if max_videos else items


def _longest_valid_run(rows: Any) -> tuple[int, int]:
    """Row range [start, stop) of the longest run of consecutive valid frames (:func:`pipeline.schemas.valid_flags`).

    Video metrics (NMF) compare consecutive frames, so a video is evaluated on one unbroken run of trusted labels.
    """
    valid = valid_flags(rows)
    best, start = (0, 0), None
    for i, ok in enumerate([*valid, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            best = max(best, (start, i), key=lambda r: r[1] - r[0])
            start = None
    return best


def _predict(item: dict[str, Any], checkpoint: str, stamp: str, rwr: RwR, gammas: list[float]) -> dict[str, Any]:
    """From-scratch and RwR predictions (one per γ) of one video, with per-frame cost (runs on a dask worker)."""
    model = worker_cached(f"ldeq:{checkpoint}:{stamp}", lambda: load_checkpoint(checkpoint))
    start = item.get("start", 0)
    frames = [f.rgb for f in iter_frames(item["path"], start, start + len(item["boxes"]))]
    exact = model_determinism() == "exact"  # the same predictions on every x86-64 machine (one thread, MKL CNR)
    with exact_cpu_kernels() if exact else nullcontext():
        scratch = predict_video(model, frames, item["boxes"])
        warm = {g: predict_video(model, frames, item["boxes"], replace(rwr, gamma=g)) for g in gammas}
    first = warm[gammas[0]]
    return {**item, "status": "ok", "scratch": scratch.points, "rwr": {g: r.points for g, r in warm.items()},
            "calls": {"scratch": scratch.calls.mean(), "rwr": first.calls[1:].mean()},
            "seconds": {"scratch": float(np.median(scratch.seconds)), "rwr": float(np.median(first.seconds[1:]))}}


def _on_error(item: dict[str, Any], err: BaseException) -> dict[str, Any]:
    return {**item, **error_status(item["video_id"], err)}


def _subset_summary(videos: list[dict[str, Any]], filters: dict[str, dict[str, float]],
                    hard_filters: dict[str, dict[str, float]] | None, best_gamma: float) -> tuple[dict, list]:
    """Per-method video NME/NMF of one subset (with ratios to ``none``) and the per-video rows for the plot."""
    scores = []
    for r in videos:
        preds = {"none": r["scratch"], **{k: apply_filter(k, r["scratch"], r["fps"], c) for k, c in filters.items()},
                 "rwr": r["rwr"][0.0], "rwr_prox": r["rwr"][best_gamma]}
        if hard_filters is not None:
            preds.update({f"{k}_hard_tuned": apply_filter(k, r["scratch"], r["fps"], c)
                          for k, c in hard_filters.items()})
        scores += score_video(r["video_id"], r["gt"], preds)
    if not scores:
        return {}, []
    summary = summarize(scores)
    intervals = bootstrap_intervals(scores)
    for method, values in summary.items():  # the ratios the RwR claim is stated in
        values["nmf_vs_none"] = values["nmf"] / summary["none"]["nmf"]
        values["nme_vs_none"] = values["nme"] / summary["none"]["nme"]
        values.update(intervals[method])  # type: ignore[arg-type]  # intervals are [low, high] lists
    return summary, scores


def _percentile_interval(samples: np.ndarray) -> list[float]:
    tail = 100 * (1 - BOOTSTRAP["confidence"]) / 2
    return [float(v) for v in np.percentile(samples, [tail, 100 - tail])]


def _video_resamples(n_videos: int) -> np.ndarray:
    """``BOOTSTRAP["resamples"]`` draws of ``n_videos`` video indices with replacement, from a fixed seed: the same
    draws for every figure and method (paired ratios) and on every machine."""
    rng = np.random.default_rng(int(BOOTSTRAP["seed"]))
    return rng.integers(0, n_videos, (int(BOOTSTRAP["resamples"]), n_videos))


def bootstrap_intervals(scores: list[VideoScores]) -> dict[str, dict[str, list[float]]]:
    """Per method, percentile bootstrap intervals over the subset's videos (:data:`BOOTSTRAP`) of its video NME and
    NMF (``nme_ci``, ``nmf_ci``) and of their ratios to ``none`` (``nme_vs_none_ci``, ``nmf_vs_none_ci``).

    Videos, not frames, are resampled: a video's frames share its face, its labels and its errors, so they are not
    independent draws. Every method sees the same resampled videos, so a ratio's interval is that of a paired
    comparison: an RwR NMF gain is supported where ``nmf_vs_none_ci`` lies below 1.
    """
    videos = sorted({s.video_id for s in scores})
    column = {v: i for i, v in enumerate(videos)}
    table: dict[str, dict[str, np.ndarray]] = {}
    for s in scores:
        per = table.setdefault(s.method, {"nme": np.full(len(videos), np.nan), "nmf": np.full(len(videos), np.nan)})
        per["nme"][column[s.video_id]], per["nmf"][column[s.video_id]] = s.nme, s.nmf
    picks = _video_resamples(len(videos))
    means = {m: {k: v[picks].mean(axis=1) for k, v in per.items()} for m, per in table.items()}
    out = {}
    for method, mine in means.items():
        out[method] = {"nme_ci": _percentile_interval(mine["nme"]), "nmf_ci": _percentile_interval(mine["nmf"])}
        if "none" in means:
            out[method]["nme_vs_none_ci"] = _percentile_interval(mine["nme"] / means["none"]["nme"])
            out[method]["nmf_vs_none_ci"] = _percentile_interval(mine["nmf"] / means["none"]["nmf"])
    return out


def _subsets(done: list[dict[str, Any]], filters: dict[str, dict[str, float]],
             hard_filters: dict[str, dict[str, float]],
             best_gamma: float) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Per subset with videos, :func:`_subset_summary`; and the per-video rows of both subsets for the plot."""
    subsets, per_video = {}, []
    for subset in ("easy", "hard"):
        summary, scores = _subset_summary([r for r in done if r["subset"] == subset], filters,
                                          hard_filters if subset == "hard" else None, best_gamma)
        if summary:
            subsets[subset] = summary
            per_video += [{"video_id": s.video_id, "subset": subset, "method": s.method, "nme": s.nme, "nmf": s.nmf}
                          for s in scores]
    return subsets, per_video


def write_scalar_metrics(directory: str | Path, subsets: dict[str, dict[str, dict[str, float]]]) -> list[Path]:
    """One small JSON per subset and method, ``<directory>/<subset>/<method>.json`` = ``{"nme", "nmf", "videos"}``.

    DVC shows all metrics files as one table, a row per file and a column per key, so a few keys shared by every
    file keep ``dvc metrics show`` and ``dvc metrics diff`` on a screen; earlier files are removed first (no stale
    method survives a rerun). Returns the files written.
    """
    root = Path(directory)
    for stale in root.glob("*/*.json"):  # only what this function writes: the folder may be given by hand
        stale.unlink()
    written = []
    for subset, methods in subsets.items():
        for method, values in methods.items():
            path = root / subset / f"{method}.json"
            write_json(path, {"nme": values["nme"], "nmf": values["nmf"], "videos": int(values["n_videos"])})
            written.append(path)
    return written


def evaluate_checkpoint(annotations: str | Path, clips: str | Path, params: EvaluateParams, cluster: ClusterParams,
                        default_checkpoint: str | Path, metrics_path: str | Path, ced_path: str | Path,
                        per_video_path: str | Path, scalars_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``params.checkpoint`` (or ``default_checkpoint``) on the annotated videos; write results and plots.

    ``metrics_path`` gets the whole results (plain JSON); ``scalars_dir`` (default: ``metrics_path`` without its
    suffix, e.g. ``metrics/evaluate/``) the DVC metrics, :func:`write_scalar_metrics`. Returns the whole results.
    """
    scalars = Path(metrics_path).with_suffix("") if scalars_dir is None else Path(scalars_dir)
    if scalars == Path(metrics_path):
        raise ValueError(f"{metrics_path}: the results file needs a suffix (.json): its scalars go to a folder of "
                         "the same name without it")
    checkpoint, weights = evaluation_checkpoint(params, default_checkpoint)
    items = _videos(Path(annotations), Path(clips), params.max_videos)
    rwr = rwr_settings(params)
    run = {"checkpoint": str(checkpoint.resolve()), "stamp": f"{weights.stat().st_mtime_ns}", "rwr": rwr}
    results, gamma_scores, best_gamma = _predict_all(items, params, cluster, run)
    done = [r for r in results if r["status"] == "ok"]
    if not done:
        raise ManifestError(f"{annotations}: no video could be evaluated ({len(results)} failed)")

    filters, hard_filters = _tune_filters(done)
    subsets, per_video = _subsets(done, filters, hard_filters, best_gamma)
    metrics: dict[str, Any] = {
        "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(weights)},
        "filters": filters, "filters_tuned_on_hard": hard_filters,
        "rwr_gamma": {"chosen": best_gamma, "objective": gamma_scores},
        "rwr_settings": {"iters": rwr.iters, "align": rwr.align, "frame0_full_solve": rwr.frame0_full_solve},
        "confidence_intervals": {"method": "percentile bootstrap over videos", **BOOTSTRAP},
        "subsets": subsets}
    hard = [r for r in done if r["subset"] == "hard"] or done
    metrics["image_hard"] = _image_metrics(hard, best_gamma)
    metrics["standalone"] = _standalone_tables(done, best_gamma)  # python -m ldeq.evaluate's table (issue #31)
    metrics["rwr_cost"] = {"calls_per_frame": {m: float(np.mean([r["calls"][m] for r in done]))
                                               for m in ("scratch", "rwr")}}
    _write_timings(done)
    metrics["n_videos"] = {"evaluated": len(done), "failed": len(results) - len(done)}
    write_json(metrics_path, metrics)
    write_scalar_metrics(scalars, metrics["subsets"])
    _write_plots(hard, per_video, ced_path, per_video_path)
    log.info("evaluate: %s", json.dumps(metrics["subsets"].get("hard", {})))
    return metrics


def _predict_all(items: list[dict[str, Any]], params: EvaluateParams, cluster: ClusterParams,
                 run: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[float, float], float]:
    """Every video's predictions (failures as error rows, logged), with RwR's γ tuned on the first
    ``params.tune_videos`` easy videos over ``params.rwr_gammas`` and 0: the results, each γ's objective, the best γ."""
    gammas = sorted({0.0, *params.rwr_gammas})
    tuning = [i for i in items if i["subset"] == "easy"][: params.tune_videos]
    tuned = [r for r in map_videos(_predict, tuning, cluster, _on_error, gammas=gammas, **run) if r["status"] == "ok"]
    gamma_scores = {g: objective([r["scratch"] for r in tuned], [r["rwr"][g] for r in tuned], [r["gt"] for r in tuned])
                    for g in gammas} if tuned else {}
    best_gamma = min(gamma_scores, key=gamma_scores.__getitem__) if gamma_scores else 0.0
    log.info("RwR γ tuned on %d easy videos: %s → γ = %s", len(tuned), gamma_scores, best_gamma)
    # the tuning videos already hold every γ of the grid: only the others need a second pass
    seen = {r["video_id"] for r in tuned}
    rest = [i for i in items if i["video_id"] not in seen]
    results = tuned + map_videos(_predict, rest, cluster, _on_error, gammas=sorted({0.0, best_gamma}), **run)
    for r in results:
        if r["status"] != "ok":
            log.error("evaluate: %s failed: %s", r["video_id"], r.get("error"))
    return results, gamma_scores, best_gamma


def _tune_filters(done: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The EMA and One-Euro constants tuned on the easy videos, and those tuned on the hard ones (none without)."""
    validation = [(r["scratch"], r["gt"], r["fps"]) for r in done if r["subset"] == "easy"]
    filters = {kind: tune_filter(kind, validation)[0] for kind in ("ema", "one_euro")}
    log.info("filter constants tuned on %d easy videos: %s", len(validation), filters)
    hard_pairs = [(r["scratch"], r["gt"], r["fps"]) for r in done if r["subset"] == "hard"]
    hard_filters = {kind: tune_filter(kind, hard_pairs)[0] for kind in ("ema", "one_euro")} if hard_pairs else {}
    return filters, hard_filters


def _final_points(best_gamma: float) -> dict[str, Any]:
    """The image-metric methods: from scratch, RwR as released (γ = 0), RwR with the tuned proximal anchor."""
    return {"scratch": lambda r: r["scratch"], "rwr": lambda r: r["rwr"][0.0],
            "rwr_prox": lambda r: r["rwr"][best_gamma]}


def _image_metrics(hard: list[dict[str, Any]], best_gamma: float) -> dict[str, dict[str, Any]]:
    """Per method, image NME (%), FR and AUC at 10 % over every frame of the hard videos, each with its bootstrap
    interval over those videos (``nme_ci``, ``fr10_ci``, ``auc10_ci``; :data:`BOOTSTRAP`)."""
    picks = _video_resamples(len(hard))
    images: dict[str, dict[str, Any]] = {}
    for method, pick in _final_points(best_gamma).items():
        per_video = [nme(pick(r), r["gt"]) for r in hard]
        per_frame = np.concatenate(per_video)
        fr, auc = fr_auc(per_frame)
        drawn = np.array([[100 * frames.mean(), *fr_auc(frames)]
                          for frames in (np.concatenate([per_video[i] for i in draw]) for draw in picks)])
        images[method] = {"nme": float(100 * per_frame.mean()), "fr10": fr, "auc10": auc,
                          "nme_ci": _percentile_interval(drawn[:, 0]), "fr10_ci": _percentile_interval(drawn[:, 1]),
                          "auc10_ci": _percentile_interval(drawn[:, 2])}
    return images


def _standalone_tables(done: list[dict[str, Any]], best_gamma: float) -> dict[str, dict[str, Any]]:
    """Per subset and image-metric method, the table ``python -m ldeq.evaluate`` prints for the same predictions and
    frames (:func:`ldeq.evaluate.subset_summary`: NME inter-ocular and face size, FR/AUC, NMF, NAD(τ) curve)."""
    tables: dict[str, dict[str, Any]] = {}
    for subset in ("easy", "hard"):
        videos = [r for r in done if r["subset"] == subset]
        if videos:
            tables[subset] = {method: subset_summary([score_standalone(r["video_id"], subset, pick(r), r["gt"])
                                                      for r in videos], TAUS)
                              for method, pick in _final_points(best_gamma).items()}
    return tables


def _write_timings(done: list[dict[str, Any]]) -> None:
    """Seconds per frame from scratch and with RwR: wall times differ on every run, so they go to an untracked log,
    not into the DVC metrics (dvc.lock stays clean)."""
    cost = {m: float(np.mean([r["seconds"][m] for r in done])) for m in ("scratch", "rwr")}
    write_json(TIMINGS_DIR / "evaluate.json", {"seconds_per_frame": cost, "time_ratio": cost["rwr"] / cost["scratch"]})


def _write_plots(hard: list[dict[str, Any]], per_video: list[dict[str, Any]], ced_path: str | Path,
                 per_video_path: str | Path) -> None:
    """The DVC plots: the CED curves of the hard frames (scratch, RwR) and every video's NME/NMF per method."""
    gt = np.concatenate([r["gt"] for r in hard])
    xs, scratch_ced = ced(nme(np.concatenate([r["scratch"] for r in hard]), gt))
    _, rwr_ced = ced(nme(np.concatenate([r["rwr"][0.0] for r in hard]), gt))
    with atomic_path(ced_path) as tmp:
        tmp.write_text("nme,scratch,rwr\n" + "".join(f"{x:.4f},{a:.4f},{b:.4f}\n"
                                                     for x, a, b in zip(xs[::10], scratch_ced[::10], rwr_ced[::10])))
    with atomic_path(per_video_path) as tmp:
        tmp.write_text("video_id,subset,method,nme,nmf\n" + "".join(
            f"{r['video_id']},{r['subset']},{r['method']},{r['nme']:.4f},{r['nmf']:.4f}\n" for r in per_video))
