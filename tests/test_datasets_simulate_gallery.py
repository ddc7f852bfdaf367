"""The impairment gallery: one row per impairment, each visibly different from the clean preamble."""

from __future__ import annotations

import numpy as np

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.sim.gallery import impairment_examples, impairment_gallery


def test_each_gallery_example_is_the_clean_preamble_changed_by_one_impairment():
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    clean, impaired = impairment_examples(cfg, seed=1)
    # two syntheses of a unit-amplitude chirp, both float64 phase, one through float32 cos/sin: ~1e-6 apart
    np.testing.assert_allclose(clean, packet_waveform(cfg)[: cfg.preamble_samples], atol=2e-5)
    assert len(impaired) >= 10
    for title, x in impaired.items():
        assert x.shape == clean.shape and x.dtype == np.complex64 and np.all(np.isfinite(x)), title
        assert np.abs(x - clean).max() > 0.05, title


def test_gallery_is_a_figure_with_two_panels_per_impairment():
    from matplotlib.figure import Figure

    fig = impairment_gallery(seed=0)
    _, impaired = impairment_examples(seed=0)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * (len(impaired) + 1)
    titles = [ax.get_title() for ax in fig.axes]
    assert "clean preamble (dB)" in titles and all(t in titles for t in impaired)
