import cv2
import numpy as np
import pytest

from ldeq.wflw_data import WFLWImages, pfld_crop, read_precropped, read_wflw_annotations


def annotation_line(points: np.ndarray, box, flags, image: str) -> str:
    return " ".join([*(f"{v:.3f}" for v in points.ravel()), *(str(int(b)) for b in box), *map(str, flags), image])


@pytest.fixture()
def wflw_tree(tmp_path, astronaut):
    root = tmp_path / "WFLW_images" / "0--Parade"
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "a.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    rng = np.random.default_rng(0)
    points = rng.uniform(190, 260, (98, 2))
    lines = [annotation_line(points, (180, 80, 270, 175), [0, 1, 0, 0, 1, 0], "0--Parade/a.jpg")]
    ann = tmp_path / "list_98pt_rect_attr_train.txt"
    ann.write_text("\n".join(lines) + "\n")
    return tmp_path, ann, points


def test_reads_207_token_lines(wflw_tree):
    _, ann, points = wflw_tree
    (record,) = read_wflw_annotations(ann)
    assert record.image == "0--Parade/a.jpg"
    assert np.allclose(record.points, points, atol=1e-3)
    assert record.box.tolist() == [180, 80, 270, 175]
    assert record.attributes == {"pose": False, "expression": True, "illumination": False, "makeup": False,
                                 "occlusion": True, "blur": False}


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 207 tokens, found 3"):
        read_wflw_annotations(path)


def test_pfld_crop_keeps_points_on_the_pixels(wflw_tree, astronaut):
    _, ann, _ = wflw_tree
    (record,) = read_wflw_annotations(ann)
    crop, pts = pfld_crop(astronaut, record, 256)
    assert crop.shape == (256, 256, 3)
    assert (pts > 0).all() and (pts < 256).all()
    src = record.points[0].round().astype(int)
    dst = pts[0].round().astype(int)
    assert np.abs(crop[dst[1], dst[0]].astype(int) - astronaut[src[1], src[0]].astype(int)).max() < 40


def test_dataset_yields_normalised_targets(wflw_tree):
    root, ann, _ = wflw_tree
    data = WFLWImages(ann, root / "WFLW_images", size=64)
    image, target = data[0]
    assert image.shape == (3, 64, 64) and target.shape == (98, 2)
    assert (target > 0).all() and (target < 1).all()


def test_precropped_layout(tmp_path):
    path = tmp_path / "test.txt"
    coords = np.linspace(0.1, 0.9, 196)
    path.write_text("img_0001.png " + " ".join(f"{c:.4f}" for c in coords) + "\n")
    ((name, pts),) = read_precropped(path)
    assert name == "img_0001.png" and pts.shape == (98, 2) and np.isclose(pts[0, 0], 0.1)


def test_wflw_and_video_crops_train_together(wflw_tree, tmp_path):
    import torch

    from ldeq.config import get_config
    from ldeq.model import LDEQ
    from ldeq.train import LandmarkCrops, train

    root, ann, _ = wflw_tree
    rng = np.random.default_rng(0)
    crops = LandmarkCrops(rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8),
                          rng.uniform(5, 60, (3, 98, 2)).astype(np.float32))
    data = torch.utils.data.ConcatDataset([WFLWImages(ann, root / "WFLW_images", 64), crops])
    cfg = get_config("tiny", batch_size=2)
    history = train(LDEQ(cfg), data, cfg, tmp_path / "run")
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
