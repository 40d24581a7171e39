import torch

from ldeq.checkpoint import legacy_to_current
from ldeq.config import get_config
from ldeq.model import LDEQ, normalize_heatmaps, soft_argmax
from tests.ldeq.released_reference import official_shapes, official_state_dict, reference_cell, to_legacy

#: A four-level hourglass (the released depth) small enough for CPU tests.
SMALL = dict(input_size=64, injection_width=16, width_increment=8, hourglass_levels=4, solver="fpi", max_iters=3,
             tol=0.0)


def test_paper_configuration_has_the_published_parameter_count():
    model = LDEQ(get_config("paper"))
    stem = sum(p.numel() for p in model.tail.parameters())
    cell = sum(p.numel() for p in model.deq_layer.cell.parameters())
    assert (stem, cell) == (403_128, 21_422_018)


def test_state_dict_has_the_released_names_shapes_and_order():
    for cfg, (width, increment) in [(get_config("paper"), (264, 24)), (get_config("tiny", **SMALL), (16, 8))]:
        ours = [(k, tuple(v.shape)) for k, v in LDEQ(cfg).state_dict().items()]
        assert ours == list(official_shapes(98, width, increment).items())


def test_normalisation_and_soft_argmax_hold_no_state():
    cell = LDEQ(get_config("tiny")).deq_layer.cell
    assert not any(k.startswith(("norm", "soft")) for k in cell.state_dict())
    assert [k for k in cell.state_dict() if k.startswith("head")] == ["head.conv.weight", "head.conv.bias"]


def test_cell_computes_the_released_cell_on_released_weights():
    torch.manual_seed(0)
    cfg = get_config("tiny", **SMALL)
    state = official_state_dict(official_shapes(98, 16, 8), seed=1, scale=0.2)
    model = LDEQ(cfg).eval()
    model.load_state_dict(state)
    z, x = torch.rand(2, 98, 16, 16), torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        ours = model.deq_layer.cell(z, x)
    expected = reference_cell(state, z, x, cfg.beta)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert (ours - reference_cell(state, z.flip(-1), x, cfg.beta)).abs().max() > 1e-3  # the comparison can fail


def test_legacy_weights_compute_the_same_function_after_conversion():
    """Layout 1 (before the renaming) on its own names vs the converted weights on the current model (float64)."""
    for levels in (2, 4):
        cfg = get_config("tiny", **{**SMALL, "hourglass_levels": levels})
        torch.manual_seed(levels)
        current = LDEQ(cfg).double().eval()
        legacy = to_legacy(current.state_dict(), levels)
        key = "deq_layer.cell.hourglass.downchan1.conv.weight"
        assert legacy[key].shape != current.state_dict()[key].shape  # the symptom: same name, other level
        converted = legacy_to_current(legacy, levels)
        assert all(torch.equal(converted[k], v) for k, v in current.state_dict().items())
        z, x = torch.rand(2, 98, 16, 16, dtype=torch.float64), torch.randn(2, 16, 16, 16, dtype=torch.float64)
        with torch.no_grad():
            assert torch.allclose(current.deq_layer.cell(z, x), reference_cell(legacy, z, x, cfg.beta, legacy=True,
                                                                               levels=levels), atol=1e-12)


def test_normalisation_peaks_at_one():
    h = torch.randn(2, 3, 8, 8) * 5
    z = normalize_heatmaps(h, beta=0.3)
    assert torch.allclose(z.flatten(2).amax(-1), torch.ones(2, 3))
    assert (z > 0).all()


def test_soft_argmax_of_a_delta_has_no_half_pixel_offset():
    z = torch.zeros(1, 2, 64, 64)
    z[0, 0, 10, 20] = 1.0  # row 10, col 20
    z[0, 1, 63, 0] = 1.0
    xy, sigma = soft_argmax(z)
    assert torch.allclose(xy[0, 0], torch.tensor([20 / 64, 10 / 64]), atol=1e-4)
    assert torch.allclose(xy[0, 1], torch.tensor([0.0, 63 / 64]), atol=1e-4)
    assert (sigma < 0.01).all()  # only the 1e-4 in the released normaliser keeps it off zero
