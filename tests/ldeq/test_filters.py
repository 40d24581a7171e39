import numpy as np
import pytest

from ldeq.filters import ema, one_euro


def test_ema_and_one_euro():
    track = np.array([0.0, 10.0, 10.0, 10.0])
    assert np.allclose(ema(track, 0.5), [0, 5, 7.5, 8.75])
    assert np.allclose(ema(track, 1.0), track)
    with pytest.raises(ValueError):
        ema(track, 0.0)
    rng = np.random.default_rng(0)
    noisy = np.cumsum(np.ones(200)) + rng.normal(0, 2, 200)
    smooth = one_euro(noisy, fps=30, min_cutoff=1.0, beta=0.0)
    assert np.std(np.diff(smooth)) < 0.5 * np.std(np.diff(noisy))
    fast = one_euro(noisy, fps=30, min_cutoff=1.0, beta=1.0)
    assert np.abs(fast - np.arange(1, 201)).mean() < np.abs(smooth - np.arange(1, 201)).mean()
