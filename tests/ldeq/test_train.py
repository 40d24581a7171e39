import numpy as np
import torch

from ldeq.checkpoint import load_checkpoint
from ldeq.config import get_config
from ldeq.infer import exact_cpu_kernels
from ldeq.model import LDEQ
from ldeq.train import Augment, LandmarkCrops, _augment, heatmap_loss, train
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


def test_training_reduces_loss_and_resumes(tmp_path, caplog):
    images, points = toy_data()
    cfg = get_config("tiny", epochs=3, batch_size=8, lr=3e-3)
    data = LandmarkCrops(images, points, augment=None)
    torch.manual_seed(0)
    history = train(LDEQ(cfg), data, cfg, tmp_path, fingerprint="a")
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    longer = cfg.replace(epochs=4)
    resumed = train(LDEQ(longer), data, longer, tmp_path, fingerprint="a")
    assert len(resumed) == 4 and resumed[:3] == history  # continued, not restarted
    caplog.clear()
    with caplog.at_level("INFO", logger="ldeq.train"):
        fresh = train(LDEQ(longer), data, longer, tmp_path, fingerprint="other data")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(fresh) == 4 and state["fingerprint"] == "other data" and state["epoch"] == 4
    # a stale checkpoint is not continued: every epoch ran again (seeded, so the same losses as the first run)
    assert [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("epoch ")] == [
        "1/4", "2/4", "3/4", "4/4"]
    model = load_checkpoint(tmp_path)
    assert not model.training and model.cfg == longer


def test_heatmap_loss_is_zero_at_the_target_gaussian_and_ln2_for_disjoint_maps():
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


def test_a_checkpoint_of_the_old_module_layout_is_not_resumed(tmp_path):
    images, points = toy_data(n=8)
    cfg = get_config("tiny", epochs=2, batch_size=8)
    data = LandmarkCrops(images, points)
    train(LDEQ(cfg), data, cfg, tmp_path, fingerprint="a")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["layout"] == 2
    del state["layout"]  # as written before the renaming, with a matching fingerprint
    torch.save(state, tmp_path / "checkpoint.pt")
    history = train(LDEQ(cfg), data, cfg, tmp_path, fingerprint="a")
    assert [h["epoch"] for h in history] == [1, 2]  # retrained from epoch 0, not continued at epoch 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["layout"] == 2


def test_crops_are_normalised_with_the_given_mean_and_std():
    images, points = toy_data(n=1)
    image, target = LandmarkCrops(images, points, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))[0]
    assert torch.allclose(image, torch.from_numpy(images[0] / 127.5 - 1).permute(2, 0, 1).float(), atol=1e-6)
    assert torch.allclose(target, torch.from_numpy(points[0] / 64))


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoint.pt", weights_only=True)["model"]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Each epoch's data order and augmentation come from the seed and the epoch alone: stopping after epoch 2 and
    resuming gives bit for bit the checkpoint of three epochs in one go (exact kernels, as the train stage runs)."""
    images, points = toy_data()
    cfg = get_config("tiny", epochs=3, batch_size=8, lr=3e-3)
    runs = {}
    for name, stops in (("straight", [3]), ("resumed", [2, 3])):
        for epochs in stops:
            torch.manual_seed(0)
            with exact_cpu_kernels():
                train(LDEQ(cfg.replace(epochs=epochs)), LandmarkCrops(images, points, Augment(), seed=1),
                      cfg.replace(epochs=epochs), tmp_path / name, fingerprint="a")
        runs[name] = _weights(tmp_path / name)
    assert runs["straight"].keys() == runs["resumed"].keys()
    assert all(torch.equal(runs["straight"][k], runs["resumed"][k]) for k in runs["straight"])


def test_exact_kernels_do_not_follow_the_callers_thread_count(tmp_path):
    images, points = toy_data(n=8)
    cfg = get_config("tiny", epochs=1, batch_size=8)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        with exact_cpu_kernels():
            x, w = torch.randn(16, 8, 12, 12), torch.randn(8, 8, 3, 3)
            assert torch._C._select_conv_backend(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                 None) == torch._C._ConvBackend.Slow2d
            train(LDEQ(cfg), LandmarkCrops(images, points), cfg, tmp_path / str(threads), fingerprint="a")
        assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    one, two = _weights(tmp_path / "1"), _weights(tmp_path / "2")
    assert all(torch.equal(one[k], two[k]) for k in one)
