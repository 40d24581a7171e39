import cv2
import numpy as np
import torch

from ldeq.checkpoint import load_checkpoint
from ldeq.config import get_config
from ldeq.crop import crop_transform, from_crop, to_crop
from ldeq.infer import RwR, predict_video, warp_heatmaps
from ldeq.model import LDEQ, soft_argmax
from tests.ldeq.released_reference import (
    official_shapes,
    official_state_dict,
    reference_forward,
    released_args,
    released_network_input,
    released_to_frame,
)


def released_video(astronaut, n: int = 4):
    """A short "video": the astronaut photo shifted a few pixels per frame, with boxes following the face."""
    frames, boxes = [], []
    for t in range(n):
        shift = np.float32([[1, 0, 3 * t], [0, 1, -2 * t]])
        frames.append(cv2.warpAffine(astronaut, shift, astronaut.shape[1::-1]))
        boxes.append([170.3 + 3 * t, 60.8 - 2 * t, 290.1 + 3.4 * t, 200.6 - 1.5 * t])
    return frames, np.array(boxes, np.float32)


def test_released_weights_compute_the_released_function_on_wflw_v_crops(tmp_path, astronaut):
    """A released-layout checkpoint (fpi, as the WFLW-V weights), loaded by ``load_checkpoint``, gives the
    landmarks of the released evaluation (crop, normalisation, solver, extra step, back to the frame), from scratch
    and with RwR as released (``rwr_max_iters`` 1 for every frame, z*_{t−1} reused as is)."""
    size, max_iters, tol, beta = 64, 5, 1e-4, 0.4
    state = official_state_dict(official_shapes(98, 16, 8), seed=3, scale=0.2)
    path = tmp_path / "final.pth.tar"
    args = released_args(16, 8, solver="fpi", max_iters=max_iters, tol=tol, beta=beta, im_size=size, heatmap_size=16)
    torch.save({"state_dict": state, "args": args}, path)
    model = load_checkpoint(path)
    frames, boxes = released_video(astronaut)

    scratch = predict_video(model, frames, boxes)
    rwr = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=False, align=False, gamma=0.0))

    expected_scratch, expected_rwr, z_prev = [], [], None
    for rgb, box in zip(frames, boxes):
        image, matrix = released_network_input(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), box, size)
        keypoints, _ = reference_forward(state, image[None], beta, max_iters, tol)
        expected_scratch.append(released_to_frame(keypoints[0].numpy() * size, matrix))
        keypoints, z_prev = reference_forward(state, image[None], beta, 1, tol, z0=z_prev)
        expected_rwr.append(released_to_frame(keypoints[0].numpy() * size, matrix))
    assert np.allclose(scratch.points, np.stack(expected_scratch), atol=1e-3)
    assert np.allclose(rwr.points, np.stack(expected_rwr), atol=1e-3)
    assert scratch.calls.tolist() == [max_iters + 1] * 4 and rwr.calls.tolist() == [2] * 4
    assert np.abs(rwr.points - scratch.points).max() > 0.01  # the two protocols differ, so each check bites


def test_rwr_costs_fewer_calls_and_frame0_gets_a_full_solve():
    cfg = get_config("tiny", max_iters=5, tol=0.0)
    model = LDEQ(cfg).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8) for _ in range(4)]
    boxes = np.tile([10, 10, 70, 70], (4, 1)).astype(np.float32)
    scratch = predict_video(model, frames, boxes)
    rwr = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=True, align=True, gamma=0.0))
    assert scratch.calls.tolist() == [6, 6, 6, 6]
    assert rwr.calls.tolist() == [6, 2, 2, 2]
    assert np.allclose(rwr.points[0], scratch.points[0])
    official = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=False, align=True, gamma=0.0))
    assert official.calls[0] == 2
    assert scratch.points.shape == (4, 98, 2)


def test_rwr_warm_steps_are_fixed_point_steps_with_an_anderson_model():
    model = LDEQ(get_config("tiny", solver="anderson", max_iters=5, tol=0.0)).eval()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8) for _ in range(3)]
    boxes = np.tile([10, 10, 70, 70], (3, 1)).astype(np.float32)
    rwr = predict_video(model, frames, boxes, RwR(iters=1, frame0_full_solve=True, align=True, gamma=0.0))
    assert rwr.calls.tolist() == [8, 2, 2]  # Anderson: 2 + 5 + extra from scratch; then 1 + 1 from z*_{t-1}


def test_inference_follows_the_checkpoints_crop_convention(astronaut):
    torch.manual_seed(0)
    plain = LDEQ(get_config("tiny")).eval()
    wider = LDEQ(get_config("tiny", crop_scale=1.5)).eval()
    wider.load_state_dict(plain.state_dict())
    box = np.array([[170.3, 60.8, 290.1, 200.6]], np.float32)
    a, b = (predict_video(m, [astronaut], box).points for m in (plain, wider))
    assert np.abs(a - b).max() > 0.1  # same weights, another crop: the config's crop_scale is used


def test_heatmap_warp_carries_a_peak_to_the_same_frame_point():
    size, side = 96, 24
    src = crop_transform(np.array([234, 154, 413, 333]), size)
    dst = crop_transform(np.array([244, 150, 433, 339]), size)  # moved and 10 px larger
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    peak = np.array([40.0, 50.0])  # crop pixels of ``src``; heatmap pixel = crop pixel / 4
    z = torch.exp(-((cols - peak[0] / 4) ** 2 + (rows - peak[1] / 4) ** 2) / 2)[None, None]
    moved = soft_argmax(warp_heatmaps(z, src, dst, size))[0][0, 0].numpy() * size
    expected = to_crop(from_crop(peak, src), dst)
    assert np.allclose(moved, expected, atol=0.25)  # bilinear resampling: within 1/16 of a heatmap pixel
    assert torch.allclose(warp_heatmaps(z, src, src, size), z, atol=1e-5)  # same crop: unchanged
