"""Tracking the main face: assignment linking, shot cuts, main-face choice, gap filling with a source per frame,
and zero-lag box smoothing.

Linking solves an assignment (scipy's ``linear_sum_assignment``) between live tracks and a frame's detections on
IoU plus motion (each track's box is predicted with its recent velocity), never across a shot cut. The main face is
chosen by a rule from params. Between and around detections a box comes from, in order of preference, the face's own
landmarks (a callback that follows the face frame to frame), interpolation inside a gap, or holding the nearest box —
but never more than ``max_gap`` frames from a detection: beyond that a frame has no box (NaN) and is not valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter
from scipy.optimize import linear_sum_assignment

from pipeline.faces.detectors import Detections

__all__ = ["SOURCES", "VALID_SOURCES", "iou", "Track", "shot_cuts", "link_tracks", "main_track", "main_face_tracks",
           "FaceTrack", "fill_track", "smooth_boxes", "LandmarkStep"]

#: Where a frame's box came from; the first three are trusted to hold the main face (``valid``).
SOURCES = ("detected", "landmarks", "interpolated", "held", "none")
VALID_SOURCES = frozenset({"detected", "landmarks", "interpolated"})

#: ``step(frame_index, prior_box) -> box or None``: the face's box in ``frame_index`` found from its landmarks, started
#: from the neighbouring frame's box; None when the landmarks are not trustworthy there (the track stops).
LandmarkStep = Callable[[int, np.ndarray], "np.ndarray | None"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes ``(x1, y1, x2, y2)``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between box centres in units of the boxes' mean side."""
    side = ((a[2] - a[0]) + (a[3] - a[1]) + (b[2] - b[0]) + (b[3] - b[1])) / 4
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / max(side, 1e-6))


@dataclass
class Track:
    """Detections linked across frames: ``frames[i]`` has ``boxes[i]`` with ``scores[i]`` (and ``rolls[i]``)."""

    track_id: int
    shot: int = 0
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rolls: list[float | None] = field(default_factory=list)

    def mean_area(self) -> float:
        b = np.array(self.boxes)
        return float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))

    def predict(self, frame: int) -> np.ndarray:
        """Box expected at ``frame``: the last box moved by the velocity of the last two detections (≤ 5 apart)."""
        last = self.boxes[-1]
        if len(self.frames) < 2 or self.frames[-1] - self.frames[-2] > 5:
            return last
        velocity = (last - self.boxes[-2]) / (self.frames[-1] - self.frames[-2])
        return last + velocity * (frame - self.frames[-1])

    def add(self, frame: int, box: np.ndarray, score: float, roll: float | None) -> None:
        self.frames.append(frame)
        self.boxes.append(np.asarray(box, np.float32))
        self.scores.append(float(score))
        self.rolls.append(roll)


def shot_cuts(thumbnails: list[np.ndarray], threshold: float) -> list[int]:
    """Frames that start a new shot: the mean absolute difference of consecutive grey thumbnails exceeds
    ``threshold`` grey levels (camera motion and lighting change move it by a few levels; a cut by tens)."""
    cuts = []
    for k in range(1, len(thumbnails)):
        if float(np.abs(thumbnails[k].astype(np.int16) - thumbnails[k - 1]).mean()) > threshold:
            cuts.append(k)
    return cuts


def _rolls(dets: Detections) -> list[float | None]:
    """In-plane roll (degrees) of each detection from its eye keypoints, where the model gives them."""
    kps = dets.keypoints5 if dets.keypoints5 is not None else dets.keypoints6
    if kps is None:
        return [None] * len(dets)
    d = kps[:, 1] - kps[:, 0]
    return [float(np.degrees(np.arctan2(y, x))) for x, y in d]


def link_tracks(per_frame: list[Detections], cuts: list[int], iou_threshold: float, max_gap: int,
                max_shift: float) -> list[Track]:
    """Link detections into tracks by an optimal assignment per frame on IoU plus motion.

    A detection may join a track last seen at most ``max_gap + 1`` frames earlier in the same shot whose predicted
    box overlaps it by ``iou_threshold`` or whose centre lies within ``max_shift`` box sides; the cost is
    ``(1 − IoU) + centre shift``. Unmatched detections start new tracks.
    """
    shot_of = np.zeros(len(per_frame), int)
    for cut in cuts:
        shot_of[cut:] += 1
    tracks: list[Track] = []
    for frame, dets in enumerate(per_frame):
        rolls = _rolls(dets)
        live = [t for t in tracks if t.shot == shot_of[frame] and frame - t.frames[-1] <= max_gap + 1]
        matched: set[int] = set()
        if live and len(dets):
            cost = np.full((len(live), len(dets)), 1e6)
            for i, track in enumerate(live):
                # against the motion prediction and the last box, whichever fits better: one outlier detection
                # must not throw the prediction off and break the track
                for anchor in (track.predict(frame), track.boxes[-1]):
                    for j, box in enumerate(dets.boxes):
                        overlap, shift = iou(anchor, box), _centre_shift(anchor, box)
                        if overlap >= iou_threshold or shift <= max_shift:
                            cost[i, j] = min(cost[i, j], (1.0 - overlap) + shift)
            for i, j in zip(*linear_sum_assignment(cost), strict=True):
                if cost[i, j] < 1e6:
                    live[i].add(frame, dets.boxes[j], dets.scores[j], rolls[j])
                    matched.add(int(j))
        for j in np.argsort(-dets.scores, kind="stable"):
            if int(j) not in matched:
                track = Track(len(tracks), int(shot_of[frame]))
                track.add(frame, dets.boxes[j], dets.scores[j], rolls[j])
                tracks.append(track)
    return tracks


def main_track(tracks: list[Track], rule: str, min_frames: int, frame_size: tuple[int, int]) -> Track | None:
    """The clip's main face among tracks with at least ``min_frames`` detections.

    Rules: ``longest`` (most detected frames, larger mean area breaks ties), ``largest`` (largest mean box area),
    ``central`` (mean box centre nearest the frame centre), ``salient`` (the face a person would label: among the
    tracks with at least half the detections of the longest, the largest product of the mean box side over the
    largest one's and the centrality ``1 / (1 + (d / (diag / 4))²)``, d the mean centre's distance from the frame
    centre). In a group photo every face is tracked about as long, so ``longest`` hands the clip to whichever face a
    detector missed once less — often a small one at the edge; a person labels the face the camera frames: there
    throughout, large and central. Remaining ties go to the lower track id.
    """
    eligible = [t for t in tracks if len(t.frames) >= min_frames]
    if not eligible:
        return None
    width, height = frame_size

    def centrality(t: Track) -> float:
        b = np.array(t.boxes)
        centre = (b[:, :2] + b[:, 2:]).mean(axis=0) / 2
        return -float(np.hypot(centre[0] - width / 2, centre[1] - height / 2))

    most_frames = max(len(t.frames) for t in eligible)
    largest_side = max(np.sqrt(t.mean_area()) for t in eligible) or 1.0
    quarter_diag = float(np.hypot(width, height)) / 4

    def salience(t: Track) -> float:
        if 2 * len(t.frames) < most_frames:  # a face seen for a moment is not the clip's subject
            return -1.0
        distance = -centrality(t)
        return float(np.sqrt(t.mean_area()) / largest_side / (1 + (distance / quarter_diag) ** 2))

    keys: dict[str, Callable[[Track], tuple[float, ...]]] = {
        "salient": lambda t: (salience(t), len(t.frames), -t.track_id),
        "longest": lambda t: (len(t.frames), t.mean_area(), -t.track_id),
        "largest": lambda t: (t.mean_area(), len(t.frames), -t.track_id),
        "central": lambda t: (centrality(t), len(t.frames), -t.track_id),
    }
    if rule not in keys:
        raise ValueError(f"unknown main-face rule {rule!r}; known: {sorted(keys)}")
    return max(eligible, key=keys[rule])


@dataclass(frozen=True)
class FaceTrack:
    """The main face over every frame: boxes (F, 4) (NaN where ``source`` is ``none``), source and roll per frame."""

    boxes: np.ndarray
    source: list[str]
    roll: np.ndarray
    raw: np.ndarray  # the box each frame's source gave, before smoothing

    @property
    def valid(self) -> np.ndarray:
        return np.array([s in VALID_SOURCES for s in self.source])


def main_face_tracks(tracks: list[Track], main: Track, max_scale: float = 1.5) -> Track:
    """The main face over the whole clip: ``main`` plus every track that never overlaps it in time (the face that
    left and came back, or reappears after a cut) and whose mean size is within ``max_scale`` of it. A track that
    coexists with the main one is another face and is never joined."""
    side = np.sqrt(main.mean_area())
    chosen = [main]
    for track in sorted(tracks, key=lambda t: (-len(t.frames), t.track_id)):
        if track is main or not 1 / max_scale <= np.sqrt(track.mean_area()) / side <= max_scale:
            continue
        if all(track.frames[-1] < c.frames[0] or track.frames[0] > c.frames[-1] for c in chosen):
            chosen.append(track)
    merged = Track(main.track_id, main.shot)
    for track in sorted(chosen, key=lambda t: t.frames[0]):
        for f, b, s, r in zip(track.frames, track.boxes, track.scores, track.rolls, strict=True):
            merged.add(f, b, s, r)
    return merged


def fill_track(track: Track, n_frames: int, cuts: list[int], max_gap: int,
               landmark_step: LandmarkStep | None = None) -> FaceTrack:
    """Every frame's box for the main face, with its source (see :data:`SOURCES`).

    Inside a gap of at most ``max_gap`` frames between two detections of one shot, the landmarks follow the face
    forward from the left detection; frames they cannot reach are interpolated. Around a longer gap, a shot cut, and
    before the first / after the last detection, the landmarks follow the face outwards for at most ``max_gap``
    frames; the rest of those ``max_gap`` frames hold the nearest box (``held``, not valid), and farther frames get no
    box. Nothing crosses a shot cut.
    """
    boxes = np.full((n_frames, 4), np.nan)
    source = ["none"] * n_frames
    roll = np.full(n_frames, np.nan)
    for frame, box, frame_roll in zip(track.frames, track.boxes, track.rolls, strict=True):
        boxes[frame], source[frame] = box, "detected"
        if frame_roll is not None:
            roll[frame] = frame_roll
    bounds = [0, *cuts, n_frames]

    def shot_range(frame: int) -> tuple[int, int]:
        i = int(np.searchsorted(bounds, frame, side="right"))
        return bounds[i - 1], bounds[i]

    def follow(anchor: int, step: int, limit: int) -> int:
        """Landmark boxes from detection ``anchor`` towards ``limit`` (exclusive); the first frame not reached."""
        f, prior = anchor + step, boxes[anchor]
        while f != limit and landmark_step is not None:
            found = landmark_step(f, prior)
            if found is None:
                break
            boxes[f], source[f], prior = found, "landmarks", found
            f += step
        return f

    def extend(anchor: int, step: int, limit: int) -> None:
        """From detection ``anchor`` outwards (``step`` ±1) up to frame ``limit`` (exclusive): landmarks, then held."""
        f = follow(anchor, step, limit)
        while f != limit:
            boxes[f], source[f] = boxes[f - step], "held"
            f += step

    detected: list[int] = track.frames
    for a, b in zip(detected[:-1], detected[1:], strict=True):
        if b - a <= 1:
            continue
        if shot_range(a) == shot_range(b) and b - a - 1 <= max_gap:
            gap = np.arange(follow(a, 1, b), b)
            if gap.size:
                t = (gap - a) / (b - a)
                boxes[gap] = boxes[a] + t[:, None] * (boxes[b] - boxes[a])
                for g in gap:
                    source[g] = "interpolated"
        else:
            middle = (a + b + 1) // 2  # each side extends at most halfway, so the two never overlap
            extend(a, 1, min(shot_range(a)[1], a + max_gap + 1, middle))
            extend(b, -1, max(shot_range(b)[0] - 1, b - max_gap - 1, middle - 1))
    first, last = detected[0], detected[-1]
    extend(first, -1, max(shot_range(first)[0] - 1, first - max_gap - 1))
    extend(last, 1, min(shot_range(last)[1], last + max_gap + 1))
    return FaceTrack(boxes.astype(np.float32), source, roll.astype(np.float32), boxes.astype(np.float32))


def smooth_boxes(face: FaceTrack, window: int, sigma: float, max_shift: float = 0.1) -> FaceTrack:
    """Median (``window`` frames; drops single-frame outliers and follows any monotonic motion exactly) then Gaussian
    (``sigma`` frames; turns a detector's jitter and grid-cell jumps into ramps) on box centre and size, within each
    run of valid frames. Both filters are centred, so a steady motion is not lagged (offline: past and future frames
    are known); where the face accelerates hard (a fast turn, leaving the frame) a Gaussian would cut the corner, so
    its correction of the median is capped at ``max_shift`` × the box side. Held boxes follow the smoothed box they
    hold; frames without a box stay NaN."""
    boxes = face.raw.astype(np.float64).copy()
    valid = face.valid
    runs = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(int), [0]])))
    for start, stop in zip(runs[::2], runs[1::2], strict=True):
        seg = boxes[start:stop]
        centre, size = (seg[:, :2] + seg[:, 2:]) / 2, seg[:, 2:] - seg[:, :2]
        if window > 1:
            centre = median_filter(centre, size=(window, 1), mode="nearest")
            size = median_filter(size, size=(window, 1), mode="nearest")
        if sigma > 0:
            cap = max_shift * size.max(axis=1, keepdims=True)
            centre = centre + np.clip(gaussian_filter1d(centre, sigma, axis=0, mode="nearest") - centre, -cap, cap)
            size = size + np.clip(gaussian_filter1d(size, sigma, axis=0, mode="nearest") - size, -cap, cap)
        boxes[start:stop] = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    for f, src in enumerate(face.source):  # a held box repeats the nearest smoothed valid box
        if src == "held":
            left = next((g for g in range(f - 1, -1, -1) if valid[g]), None)
            right = next((g for g in range(f + 1, len(valid)) if valid[g]), None)
            near = left if right is None or (left is not None and f - left <= right - f) else right
            if near is not None:
                boxes[f] = boxes[near]
    return FaceTrack(boxes.astype(np.float32), face.source, face.roll, face.raw)
