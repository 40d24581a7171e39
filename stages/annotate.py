"""Stage `annotate`: final WFLW-98 labels per frame of every selected video, plus the official WFLW-V export.

Videos are read and written one at a time (the manifests are in video order), so memory does not grow with the
dataset. Each selected video gets a row in the status manifest.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

from pipeline.annotations import VideoCorrections, read_corrections, video_annotations
from pipeline.card import CardInputs, write_card
from pipeline.cli import check_outputs, run_stage, setup_logging, stage_parser, summarize
from pipeline.export import export_wflw_v, frame_uncertainty, write_split
from pipeline.manifest import ManifestWriter, iter_joined, read_table, write_rows
from pipeline.params import stage_params

log = logging.getLogger("stages.annotate")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--landmarks", default="manifests/landmarks.parquet")
    parser.add_argument("--faces", default="manifests/faces.parquet")
    parser.add_argument("--scores", default="manifests/scores.parquet")
    parser.add_argument("--clips", default="manifests/clips.parquet")
    parser.add_argument("--out", default="manifests/annotations.parquet")
    parser.add_argument("--status-out", default="manifests/annotate_status.parquet")
    # read only for the dataset card (data/wflw_v/README.md): sources, provenance, losses, the demo's reference
    parser.add_argument("--sources", default="manifests/sources.parquet")
    parser.add_argument("--downloads", default="manifests/downloads.parquet")
    parser.add_argument("--faces-status", default="manifests/faces_status.parquet")
    parser.add_argument("--label-status", default="manifests/label_status.parquet")
    parser.add_argument("--demo-truth", default="data/demo/truth.parquet")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    annotate = stage_params("annotate", args.params)
    export_dir = Path(annotate.export_dir)
    check_outputs([args.out, args.status_out], [export_dir])
    corrections = read_corrections(annotate.corrections)  # people's points: python -m pipeline.review import
    score = stage_params("score", args.params)
    selected = {r["video_id"]: r for r in read_table(args.scores, "scores").to_pylist() if r["subset"]}
    subsets = {vid: r["subset"] for vid, r in selected.items()}
    clips = {r["video_id"]: r["path"] for r in read_table(args.clips, "clips", ["video_id", "path"]).to_pylist()}
    statuses: dict[str, dict[str, object]] = {}
    by_source: Counter[str] = Counter()
    invalid = 0
    # one video at a time: the manifests are in video order, and each video's rows are written as they are made
    with ManifestWriter(args.out, "annotations") as writer:
        for video_id, (landmarks, faces) in iter_joined((args.landmarks, "landmarks"), (args.faces, "faces")):
            if video_id not in subsets:
                continue
            try:
                if landmarks is None or faces is None or video_id not in clips:
                    missing = [n for n, t in (("landmarks", landmarks), ("faces", faces)) if t is None]
                    raise KeyError(f"no rows in the {' and '.join(missing) or 'clips'} manifest")
                result = video_annotations(video_id, subsets[video_id], landmarks, faces, score,
                                           VideoCorrections(corrections.get(video_id, {}), annotate.propagate_max_gap))
                export_wflw_v(export_dir, video_id, result["boxes"], result["points"], Path(clips[video_id]),
                              result["valid"], frame_uncertainty(selected[video_id], score, len(result["rows"])))
            except (ValueError, KeyError, OSError) as err:
                log.error("annotate: %s failed: %s", video_id, err)
                statuses[video_id] = {"video_id": video_id, "status": "error", "error": str(err)}
                continue
            writer.write(result["rows"])
            by_source.update(r["label_source"] for r in result["rows"])
            invalid += int((~result["valid"]).sum())
            statuses[video_id] = {"video_id": video_id, "status": "ok", "error": None,
                                  "n_frames": len(result["rows"])}
    for video_id in sorted(set(subsets) - set(statuses)):
        statuses[video_id] = {"video_id": video_id, "status": "error", "error": "no rows in the landmarks manifest"}
    rows = [{"stage": "annotate", **statuses[vid]} for vid in sorted(statuses)]
    write_rows(rows, "video_status", args.status_out)
    unused = sorted(set(corrections) - {vid for vid, s in statuses.items() if s["status"] == "ok"})
    log.info("annotate: labels: %d human, %d propagated, %d pseudo, %d bridged frames%s", by_source["human"],
             by_source["propagated"], by_source["pseudo"], by_source["bridged"],
             f"; corrections of unselected/failed videos not used: {', '.join(unused)}" if unused else "")
    log.info("annotate: %d videos (%d frames, %d flagged invalid) written, %d failed; export in %s",
             sum(1 for s in statuses.values() if s["status"] == "ok"), writer.rows, invalid,
             sum(1 for s in statuses.values() if s["status"] != "ok"), export_dir)
    summarize("annotate", rows)
    split = write_split(export_dir, args.scores)  # the hard/easy lists beside the export, as the official release
    log.info("annotate: split lists: %d hard, %d easy", len(split["hard"]), len(split["easy"]))
    card = CardInputs(export_dir, Path(args.sources), Path(args.downloads), Path(args.clips), Path(args.faces_status),
                      Path(args.label_status), Path(args.scores), Path(args.out), Path(args.landmarks),
                      Path(args.demo_truth), rows)
    facts = write_card(card, annotate, score)  # the dataset card, from the manifests (pipeline/card.py)
    log.info("annotate: dataset card %s: %d of %d source videos exported, %d lost (each with its reason)",
             export_dir / "README.md", facts["counts"]["exported"], facts["counts"]["sources"], len(facts["lost"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
