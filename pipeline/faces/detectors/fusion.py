"""Voting fusion across detectors of independent families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.faces.detectors.base import Detections, FaceDetector, empty, iou_matrix

__all__ = ["FusedDetector", "fuse"]


def fuse(per_member: Sequence[Detections], min_votes: int, iou_threshold: float) -> Detections:
    """Cluster detections of several detectors by overlap and keep clusters that ``min_votes`` members agree on.

    Greedy, best score first: a cluster takes at most one box per member (its best overlapping one). A kept cluster
    becomes the plain mean of its members' boxes and keypoints5 (members' scores are not comparable, so they do not
    weight the mean); its score is the members' scores (clipped to [0, 1]) summed over all members, missing ones
    counting 0, divided by the number of members.
    """
    n = len(per_member)
    boxes = np.concatenate([d.boxes for d in per_member]) if n else np.zeros((0, 4), np.float32)
    if len(boxes) == 0:
        return empty(keypoints5=True)
    member = np.concatenate([np.full(len(d), m) for m, d in enumerate(per_member)])
    index = np.concatenate([np.arange(len(d)) for d in per_member])
    scores = np.clip(np.concatenate([d.scores for d in per_member]), 0.0, 1.0)
    overlap = iou_matrix(boxes, boxes)
    free = np.ones(len(boxes), bool)
    out_boxes, out_scores, out_points = [], [], []
    for best in np.argsort(-scores, kind="stable"):
        if not free[best]:
            continue
        cluster = [best]
        for m in range(n):
            if m == member[best]:
                continue
            candidates = np.flatnonzero(free & (member == m) & (overlap[best] > iou_threshold))
            if candidates.size:
                cluster.append(candidates[np.argmax(overlap[best, candidates])])
        free[cluster] = False
        if len(cluster) < min_votes:
            continue
        out_boxes.append(boxes[cluster].mean(axis=0))
        out_scores.append(scores[cluster].sum() / n)
        points = [per_member[member[c]].keypoints5[index[c]] for c in cluster
                  if per_member[member[c]].keypoints5 is not None]
        out_points.append(np.mean(points, axis=0) if points else np.full((5, 2), np.nan, np.float32))
    if not out_boxes:
        return empty(keypoints5=True)
    return Detections(np.asarray(out_boxes, np.float32), np.asarray(out_scores, np.float32),
                      np.asarray(out_points, np.float32))


class FusedDetector(FaceDetector):
    """Runs several detectors (``members``, registry names) and keeps faces that ``min_votes`` of them agree on.

    Input: RGB, passed to every member with ``max_side``; members keep their own score thresholds. Output boxes are
    the mean of the agreeing members' boxes (members differ in how much of the head a box covers), keypoints5 the
    mean of those members that give them (NaN if none does). Time is the sum of the members' times.
    """

    name = "fused"

    def __init__(self, members: Sequence[str] | str = ("retinaface", "yunet", "mtcnn"), min_votes: int = 2,
                 iou_threshold: float = 0.3, max_side: int | None = 640, min_score: float | None = None,
                 **kwargs: Any) -> None:
        from pipeline.faces.detectors.registry import create_detector

        del min_score  # members keep their own thresholds: their scores are on different scales
        names = [m.strip() for m in members.split(",")] if isinstance(members, str) else list(members)
        self.members = [create_detector(m, max_side=max_side, **kwargs) for m in names]
        self.min_votes, self.iou_threshold = int(min_votes), float(iou_threshold)
        self.version = f"vote{self.min_votes}/" + "+".join(d.name for d in self.members)

    def detect(self, rgb: np.ndarray) -> Detections:
        return fuse([d.detect(rgb) for d in self.members], self.min_votes, self.iou_threshold)
