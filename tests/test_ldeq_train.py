import numpy as np
import torch

from ldeq.config import get_config
from ldeq.infer import predict_video
from ldeq.model import LDEQ
from ldeq.train import Augment, LandmarkCrops, _augment, load_checkpoint, train
from ldeq.wflw import FLIP_PERMUTATION


def toy_data(n: int = 16, size: int = 64):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    points = rng.uniform(10, size - 10, (n, 98, 2)).astype(np.float32)
    return images, points


def test_flip_augmentation_mirrors_points_and_permutes():
    img = np.zeros((64, 64, 3), np.uint8)
    img[10, 5] = 255
    pts = np.zeros((98, 2), np.float32)
    pts[60] = [5, 10]
    always_flip = Augment(p_flip=1.0, p_translate=0, p_rotate=0, p_blur=0, p_occlusion=0)
    out_img, out_pts = _augment(img, pts, always_flip, np.random.default_rng(0))
    assert out_img[10, 58].max() == 255
    assert np.allclose(out_pts[FLIP_PERMUTATION[60]], [58, 10])


def test_training_reduces_loss_and_resumes(tmp_path):
    images, points = toy_data()
    cfg = get_config("tiny", epochs=3, batch_size=8, lr=3e-3)
    data = LandmarkCrops(images, points, augment=None)
    torch.manual_seed(0)
    history = train(LDEQ(cfg), data, cfg, tmp_path, fingerprint="a")
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    longer = cfg.replace(epochs=4)
    resumed = train(LDEQ(longer), data, longer, tmp_path, fingerprint="a")
    assert len(resumed) == 4 and resumed[:3] == history  # continued, not restarted
    fresh = train(LDEQ(longer), data, longer, tmp_path, fingerprint="other data")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(fresh) == 4 and state["fingerprint"] == "other data" and state["epoch"] == 4
    assert fresh[:3] != history  # a stale checkpoint is not continued
    model = load_checkpoint(tmp_path)
    assert not model.training and model.cfg == longer


def test_rwr_costs_fewer_calls_and_frame0_gets_a_full_solve():
    cfg = get_config("tiny", max_iters=5, tol=0.0)
    model = LDEQ(cfg).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8) for _ in range(4)]
    boxes = np.tile([10, 10, 70, 70], (4, 1)).astype(np.float32)
    scratch = predict_video(model, frames, boxes)
    rwr = predict_video(model, frames, boxes, rwr=True, rwr_iters=1)
    assert scratch.calls.tolist() == [6, 6, 6, 6]
    assert rwr.calls.tolist() == [6, 2, 2, 2]
    assert np.allclose(rwr.points[0], scratch.points[0])
    official = predict_video(model, frames, boxes, rwr=True, rwr_iters=1, frame0_full_solve=False)
    assert official.calls[0] == 2
    assert scratch.points.shape == (4, 98, 2)


def test_rwr_warm_steps_are_fixed_point_steps_with_an_anderson_model():
    model = LDEQ(get_config("tiny", solver="anderson", max_iters=5, tol=0.0)).eval()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8) for _ in range(3)]
    boxes = np.tile([10, 10, 70, 70], (3, 1)).astype(np.float32)
    rwr = predict_video(model, frames, boxes, rwr=True, rwr_iters=1)
    assert rwr.calls.tolist() == [8, 2, 2]  # Anderson: 2 + 5 + extra from scratch; then 1 + 1 from z*_{t-1}


def test_heatmap_warp_carries_a_peak_to_the_same_frame_point():
    from ldeq.crop import crop_transform, from_crop, to_crop
    from ldeq.infer import warp_heatmaps
    from ldeq.model import soft_argmax

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


def test_heatmap_loss_is_zero_at_the_target_gaussian_and_ln2_for_disjoint_maps():
    from ldeq.train import heatmap_loss

    side = 16
    target = torch.tensor([[[5 / side, 9 / side]]])  # heatmap pixel (x 5, y 9)
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    gaussian = torch.exp(-((cols - 5) ** 2 + (rows - 9) ** 2) / 2)[None, None]
    assert float(heatmap_loss(gaussian, target, sigma=1.0)) < 1e-6
    far = torch.zeros(1, 1, side, side)
    far[0, 0, 0, 15] = 1.0  # a delta 10 px right and 9 px up: no overlap with a σ = 0.3 Gaussian
    assert abs(float(heatmap_loss(far, target, sigma=0.3)) - np.log(2)) < 1e-4
    near = torch.exp(-((cols - 6) ** 2 + (rows - 9) ** 2) / 2)[None, None]
    assert 0 < float(heatmap_loss(near, target)) < float(heatmap_loss(far, target, sigma=1.0))


def test_proximal_rwr_pulls_towards_the_previous_equilibrium():
    torch.manual_seed(0)
    model = LDEQ(get_config("tiny", tol=0.0)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        previous = model(images[:1]).z
        free = model(images[1:], z0=previous, max_iters=1)
        anchored = model(images[1:], z0=previous, max_iters=1, anchor=previous, gamma=4.0)
    assert (anchored.z - previous).norm() < (free.z - previous).norm()
    assert torch.allclose(model(images[1:], z0=previous, max_iters=1, anchor=previous, gamma=0.0).z, free.z)
