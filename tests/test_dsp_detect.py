"""StreamDetector / detect on simulated streams with known truth (starts, CFOs, SNR, sync words)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import (
    LoRaConfig,
    Packet,
    StreamDetector,
    compensate_cfo,
    detect,
    estimate_cfo,
    packet_waveform,
)
from lorarffi.errors import InputDataError

SF7 = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)


@dataclass
class Truth:
    cfg: LoRaConfig
    starts: np.ndarray  # exact start of each packet, input samples (fractional)
    cfo_hz: np.ndarray
    n_preamble: np.ndarray
    sync_word: np.ndarray


def make_stream(cfg: LoRaConfig, n_packets: int, snr_db: float | None, rng: np.random.Generator, *,
                cfo_max_hz: float = 20e3, n_preamble=8, sync_words=(0x12,), gap_s=(0.005, 0.02),
                amplitude: float = 1.0) -> tuple[np.ndarray, Truth]:
    """Packets at random times (fractional delays), random CFO, phase and payload, in AWGN at an in-band SNR.

    In-band SNR: the noise power inside the LoRa band is signal power / snr, so the full-band noise variance
    is ``amplitude**2 / snr * fs / bw``.
    """
    parts, starts, cfos, npre, sws = [], [], [], [], []
    pos = 0
    for _ in range(n_packets):
        gap = int(rng.uniform(*gap_s) * cfg.fs_hz)
        frac = rng.uniform(0, 1)
        cfo = rng.uniform(-cfo_max_hz, cfo_max_hz)
        n_pre = int(rng.choice(np.atleast_1d(n_preamble)))
        sw = int(rng.choice(sync_words))
        payload = rng.integers(0, cfg.n_chips, 12)
        pk = amplitude * packet_waveform(cfg, payload, n_preamble=n_pre, sync_word=sw, cfo_hz=cfo,
                                         phase_rad=rng.uniform(0, 2 * np.pi), t0_s=-frac / cfg.fs_hz)
        parts += [np.zeros(gap, np.complex64), pk.astype(np.complex64)]
        pos += gap
        starts.append(pos + frac)
        pos += pk.size
        cfos.append(cfo)
        npre.append(n_pre)
        sws.append(sw)
    parts.append(np.zeros(int(gap_s[1] * cfg.fs_hz), np.complex64))
    iq = np.concatenate(parts)
    if snr_db is not None:
        var = amplitude**2 * 10 ** (-snr_db / 10) * cfg.fs_hz / cfg.bw_hz
        iq = iq + (np.sqrt(var / 2) * (rng.standard_normal(iq.size) + 1j * rng.standard_normal(iq.size)))
    truth = Truth(cfg, np.array(starts), np.array(cfos), np.array(npre), np.array(sws))
    return iq.astype(np.complex64), truth


def match(found: list[Packet], truth: Truth) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest true packet for each found one (-1 if none within a symbol), start errors."""
    sps = truth.cfg.samples_per_symbol
    idx, err = [], []
    for p in found:
        j = int(np.argmin(np.abs(truth.starts - p.start)))
        e = p.start - truth.starts[j]
        idx.append(j if abs(e) < sps / 2 else -1)
        err.append(e)
    return np.array(idx, dtype=int), np.array(err)


@pytest.fixture(scope="module")
def two_packets():
    return make_stream(SF7, 2, 10.0, np.random.default_rng(7), gap_s=(0.01, 0.03))


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 40_000), max_size=6))
def test_stream_detector_ignores_chunk_boundaries(cuts, two_packets):
    iq, truth = two_packets
    edges = np.cumsum(cuts)
    det = StreamDetector(truth.cfg)
    found = [p for chunk in np.split(iq, edges[edges < iq.size]) for p in det.process(chunk)]
    found += det.flush()
    ref = detect(iq, truth.cfg)
    assert [p.start for p in found] == [p.start for p in ref]
    assert [(p.cfo_hz, p.snr_db, p.power_db, p.sync_word, p.stop) for p in found] == [
        (p.cfo_hz, p.snr_db, p.power_db, p.sync_word, p.stop) for p in ref]
    for a, b in zip(found, ref, strict=True):
        assert np.array_equal(a.preamble, b.preamble)
        assert np.array_equal(a.preamble_with_cfo, b.preamble_with_cfo)
    assert len(found) == len(truth.starts)
    assert np.all(np.abs(np.array([p.start for p in found]) - truth.starts) <= 1)
    assert det.n_samples == iq.size


def test_packets_at_minus_5_db_are_found_to_the_sample():
    """At -5 dB >= 99% of 200 packets (SF7, 125 kHz, 1 MS/s, CFO +-20 kHz) found, start within +-1 sample."""
    iq, truth = make_stream(SF7, 200, -5.0, np.random.default_rng(2024))
    found = detect(iq, SF7)
    idx, err = match(found, truth)
    good = (idx >= 0) & (np.abs(err) <= 1.0)
    assert np.unique(idx[good]).size >= 198
    assert np.all(idx >= 0), "a packet reported where there is none"
    cfo_err = np.array([p.cfo_hz for p in found])[good] - truth.cfo_hz[idx[good]]
    assert np.sqrt(np.mean(cfo_err**2)) < 15.0


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_start_and_fine_cfo_at_high_snr(snr_db):
    iq, truth = make_stream(SF7, 60, snr_db, np.random.default_rng(int(snr_db)))
    found = detect(iq, SF7)
    idx, err = match(found, truth)
    assert sorted(idx.tolist()) == list(range(60))
    exact = np.array([p.start + p.start_frac for p in found]) - truth.starts[idx]
    assert np.max(np.abs(err)) <= 1.0 and np.max(np.abs(exact)) < 0.5  # rounding plus a fraction of a sample
    cfo_err = np.array([p.cfo_hz for p in found]) - truth.cfo_hz[idx]
    assert np.sqrt(np.mean(cfo_err**2)) <= 10.0
    assert np.mean([p.snr_db for p in found]) == pytest.approx(snr_db, abs=0.5)
    assert all(p.n_preamble_symbols == 8 and p.sync_word == 0x12 for p in found)


@pytest.mark.parametrize(
    ("sf", "bw_hz", "fs_hz", "snr_db"),
    [(8, 125e3, 1e6, -8.0), (9, 125e3, 1e6, -10.0), (10, 250e3, 1e6, -12.0), (11, 250e3, 1e6, 0.0),
     (12, 125e3, 500e3, -15.0), (7, 250e3, 1e6, 0.0), (7, 500e3, 2e6, -5.0), (8, 500e3, 1e6, 20.0),
     (7, 125e3, 125e3, 10.0)],
)
def test_other_spreading_factors_and_bandwidths(sf, bw_hz, fs_hz, snr_db):
    cfg = LoRaConfig(sf=sf, bw_hz=bw_hz, fs_hz=fs_hz)
    n = max(3, 24 >> (sf - 7))
    iq, truth = make_stream(cfg, n, snr_db, np.random.default_rng(sf * 100 + int(bw_hz / 1e3)),
                            cfo_max_hz=min(20e3, bw_hz / 5), gap_s=(0.5 * cfg.symbol_duration_s, 0.02))
    found = detect(iq, cfg)
    idx, err = match(found, truth)
    assert sorted(idx.tolist()) == list(range(n))
    assert np.max(np.abs(err)) <= 1.0
    cfo_err = np.array([p.cfo_hz for p in found]) - truth.cfo_hz[idx]
    assert np.max(np.abs(cfo_err)) < 0.05 * bw_hz / cfg.n_chips + 30.0


def test_non_integer_rate_is_resampled_and_reported_at_the_input_rate():
    cfg = LoRaConfig(sf=11, bw_hz=500e3, fs_hz=2.4e6)
    iq, truth = make_stream(cfg, 4, 0.0, np.random.default_rng(3), cfo_max_hz=30e3)
    found = detect(iq, cfg)
    idx, err = match(found, truth)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    assert np.max(np.abs(err)) <= 1.5  # +-1 sample at the internal 2 MS/s is +-1.2 input samples
    assert all(p.preamble_fs_hz == 2e6 and p.preamble.shape == (8 * 2048 * 4,) for p in found)
    assert all(p.fs_hz == 2.4e6 for p in found)
    np.testing.assert_allclose([p.cfo_hz for p in found], truth.cfo_hz[idx], atol=2.0)


@pytest.mark.parametrize("n_preamble", [6, 8, 12, 20, 65, 300])
def test_any_preamble_length_is_counted(n_preamble):
    cfg = LoRaConfig(sf=7, bw_hz=250e3, fs_hz=1e6)
    iq, truth = make_stream(cfg, 2, 5.0, np.random.default_rng(n_preamble), n_preamble=n_preamble)
    found = detect(iq, cfg)
    idx, err = match(found, truth)
    assert sorted(idx.tolist()) == [0, 1]
    assert np.max(np.abs(err)) <= 1.0
    assert [p.n_preamble_symbols for p in found] == [n_preamble, n_preamble]
    for p in found:  # the fingerprint window is the 8 up-chirps just before the sync word
        assert p.fingerprint_start - p.start == (n_preamble - 8) * cfg.samples_per_symbol


@pytest.mark.parametrize("chunk", [None, 50_000])
def test_a_preamble_longer_than_the_history_is_counted_from_the_head(chunk):
    """600 up-chirps at SF7/1 MS/s outlast the detector's full-rate history (about 360 symbols)."""
    iq, truth = make_stream(SF7, 2, 5.0, np.random.default_rng(600), n_preamble=600)
    det = StreamDetector(SF7)
    step = chunk or iq.size
    found = [p for a in range(0, iq.size, step) for p in det.process(iq[a : a + step])] + det.flush()
    idx, err = match(found, truth)
    assert sorted(idx.tolist()) == [0, 1] and np.max(np.abs(err)) <= 1.0
    assert [p.n_preamble_symbols for p in found] == [600, 600]


def test_sync_words_are_read():
    iq, truth = make_stream(SF7, 12, 5.0, np.random.default_rng(11), sync_words=(0x12, 0x34, 0x2B, 0xF1))
    found = detect(iq, SF7)
    idx, _ = match(found, truth)
    assert [p.sync_word for p in found] == truth.sync_word[idx].tolist()


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x.astype(np.complex128)) ** 2))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_packet_fields_describe_the_fingerprint_window():
    rng = np.random.default_rng(5)
    iq, truth = make_stream(SF7, 3, 40.0, rng, amplitude=0.5)
    found = detect(iq, SF7)
    idx, _ = match(found, truth)
    for p, j in zip(found, idx, strict=True):
        assert isinstance(p, Packet)
        assert p.preamble.dtype == np.complex64 and p.preamble.shape == (SF7.preamble_samples,)
        # unit power up to the float32 rounding of the scale and of each product (4 u on the squares)
        assert abs(_power(p.preamble) - 1.0) <= 4 * 2.0**-24
        assert p.power_db == pytest.approx(20 * np.log10(0.5), abs=0.1)
        assert abs(float(estimate_cfo(p.preamble, SF7))) < 2.0  # CFO removed
        # the same window as received: unit power, the CFO still in it, and compensating it with the packet's
        # CFO gives the compensated view up to the phasors' float32 accuracy (1e-6) and a few roundings
        w = p.preamble_with_cfo
        assert w.dtype == np.complex64 and w.shape == p.preamble.shape
        assert abs(_power(w) - 1.0) <= 4 * 2.0**-24
        assert abs(float(estimate_cfo(w, SF7)) - truth.cfo_hz[j]) < 2.0
        back = compensate_cfo(w, p.cfo_hz, SF7.fs_hz)
        assert np.max(np.abs(back - p.preamble)) <= 2e-6 * np.max(np.abs(w))
        # the ideal CFO-free window sampled where the detector cut it (sample 0 = p.start)
        ideal = packet_waveform(SF7, t0_s=(p.start - truth.starts[j]) / SF7.fs_hz)[: SF7.preamble_samples]
        late = packet_waveform(SF7, t0_s=(p.start + 1 - truth.starts[j]) / SF7.fs_hz)[: SF7.preamble_samples]
        assert _corr(ideal, p.preamble) > 0.995  # aligned to the sample ...
        assert _corr(late, p.preamble) < 0.985  # ... and a one-sample error would show (negative control)
        assert p.stop - p.start == pytest.approx(12.25 * SF7.samples_per_symbol, abs=1)
        assert p.fingerprint_start == p.start
        # (the estimate saturates near 40 dB: sub-sample misalignment looks like noise)
        assert p.snr_db > 35.0
        assert p.start_s == pytest.approx((p.start + p.start_frac) / SF7.fs_hz)
        assert set(p.to_dict()) >= {"start", "cfo_hz", "snr_db", "fingerprint_start", "sync_word"}


def test_non_finite_samples_are_counted_and_do_not_poison():
    iq, truth = make_stream(SF7, 3, 10.0, np.random.default_rng(9), gap_s=(0.02, 0.03))
    ref = detect(iq, SF7)
    bad = iq.copy()
    first = int(truth.starts[0]) - 5000
    bad[first : first + 100] = np.nan
    bad[first + 200] = np.inf
    bad[first + 300] = complex(0, -np.inf)
    bad[-50:] = np.nan
    det = StreamDetector(SF7)
    found = [p for chunk in np.array_split(bad, 5) for p in det.process(chunk)] + det.flush()
    assert det.n_nonfinite == 152
    assert [p.start for p in found] == [p.start for p in ref]
    assert all(np.isfinite(p.cfo_hz) and np.all(np.isfinite(p.preamble)) for p in found)


def test_non_finite_samples_at_a_non_integer_rate():
    cfg = LoRaConfig(sf=8, bw_hz=500e3, fs_hz=1.2e6)
    iq, truth = make_stream(cfg, 2, 10.0, np.random.default_rng(4))
    iq[:10] = np.nan
    det = StreamDetector(cfg)
    found = det.process(iq) + det.flush()
    assert det.n_nonfinite == 10 and len(found) == 2


@pytest.mark.slow
def test_no_packet_in_60_s_of_noise():
    rng = np.random.default_rng(60)
    det = StreamDetector(SF7)
    found = []
    for _ in range(60):
        found += det.process((rng.standard_normal(1_000_000) + 1j * rng.standard_normal(1_000_000))
                             .astype(np.complex64))
    found += det.flush()
    assert found == []
    assert det.n_samples == 60_000_000


def test_no_packet_in_noise_at_other_settings():
    rng = np.random.default_rng(61)
    for cfg in (LoRaConfig(sf=12, bw_hz=125e3, fs_hz=250e3), LoRaConfig(sf=7, bw_hz=500e3, fs_hz=2e6)):
        x = (rng.standard_normal(4_000_000) + 1j * rng.standard_normal(4_000_000)).astype(np.complex64)
        assert detect(x, cfg) == []


def test_repeated_payload_symbols_do_not_make_packets():
    pk = packet_waveform(SF7, [5] * 40, cfo_hz=3e3)  # 40 identical payload up-chirps look like a preamble
    iq = np.concatenate([np.zeros(3000, np.complex64), pk, np.zeros(3000, np.complex64)])
    found = detect(iq, SF7)
    assert [p.start for p in found] == [3000]


def test_usage_errors():
    det = StreamDetector(SF7)
    with pytest.raises(InputDataError, match="1-D"):
        det.process(np.zeros((2, 10), np.complex64))
    det.flush()
    with pytest.raises(RuntimeError, match="reset"):
        det.process(np.zeros(10, np.complex64))
    det.reset()
    assert det.process(np.zeros(10, np.complex64)) == [] and det.n_samples == 10


@pytest.mark.parametrize("cfg", [SF7, LoRaConfig(sf=8, bw_hz=500e3, fs_hz=2.4e6)], ids=["1MS/s", "2.4MS/s"])
def test_long_streams_are_chunk_invariant_while_history_is_trimmed(cfg):
    """Several seconds of traffic (history is trimmed and copied out of caller memory many times)."""
    n = 30 if cfg.is_integer_oversampling else 12
    iq, truth = make_stream(cfg, n, 5.0, np.random.default_rng(31), gap_s=(0.02, 0.15))
    ref = detect(iq, cfg)
    assert len(ref) == n
    for chunk in (999, 65_537, 300_001):
        det = StreamDetector(cfg)
        buf = np.empty(chunk, np.complex64)  # the caller reuses one buffer, as an SDR loop does
        found = []
        for a in range(0, iq.size, chunk):
            n = min(chunk, iq.size - a)
            buf[:n] = iq[a : a + n]
            found += det.process(buf[:n])
        found += det.flush()
        assert [(p.start, p.cfo_hz, p.snr_db, p.sync_word) for p in found] == [
            (p.start, p.cfo_hz, p.snr_db, p.sync_word) for p in ref]
        assert all(np.array_equal(a.preamble, b.preamble) for a, b in zip(found, ref, strict=True))


@pytest.mark.parametrize("sf", [9, 12])
def test_a_packet_is_emitted_once_its_two_full_sfd_down_chirps_are_in(sf):
    """With one-symbol blocks fed a quarter symbol at a time, a packet is resolved within the chunk that
    brings the samples its resolution reads (its SFD's two full down-chirps), not at the end of its block or
    after its full look-ahead; and it is, bit for bit, the packet a recording gives."""
    cfg = LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=250e3)
    L = cfg.samples_per_symbol
    symbol_s = L / cfg.fs_hz
    iq, truth = make_stream(cfg, 6, 0.0, np.random.default_rng(sf), gap_s=(20 * symbol_s, 40 * symbol_s))
    det = StreamDetector(cfg, block_samples=L)
    step = L // 4
    emitted = []  # (packet, input samples received when it came out)
    for a in range(0, iq.size, step):
        emitted += [(p, det.n_samples) for p in det.process(iq[a : a + step])]
    assert det.flush() == []
    assert len(emitted) == 6
    # the SFD ends at p.stop, a quarter symbol after its two full down-chirps, which place it when the window
    # before them is the sync word's (else one more symbol: 0.75 after p.stop); the chunk that brings the
    # last sample adds up to a quarter symbol
    waits = np.array([(n - p.stop) / L for p, n in emitted])
    assert np.all(waits <= 0.75 + 0.25 + 1 / L), waits
    assert np.all(waits >= -0.25), waits
    assert np.median(waits) <= 0.0, waits
    ref = detect(iq, cfg)  # 65536-sample blocks: most windows of a packet arrive together
    found = [p for p, _ in emitted]
    assert [(p.start, p.cfo_hz, p.snr_db, p.sync_word) for p in found] == [
        (p.start, p.cfo_hz, p.snr_db, p.sync_word) for p in ref]
    assert all(np.array_equal(a.preamble, b.preamble) for a, b in zip(found, ref, strict=True))
    assert np.all(np.abs(np.array([p.start for p in found]) - truth.starts) <= 1)


@settings(max_examples=30, deadline=None)
@given(osr=st.integers(1, 12), n_groups=st.integers(1, 400), cut=st.integers(0, 400),
       offset=st.integers(0, 3))
def test_the_chip_rate_sum_is_the_same_bit_for_bit_on_any_piece(osr, n_groups, cut, offset):
    """The boxcar that makes chips adds each run in one order whatever the array's length or alignment:
    a block's chips and the chips of the part of it that arrived first agree bit for bit (the detector
    relies on it to resolve a packet before its block is complete)."""
    from lorarffi.dsp.detect import _boxcar

    rng = np.random.default_rng(n_groups * 13 + osr)
    size = offset + n_groups * osr
    x = (rng.standard_normal(size) * 1e3 + 1j * rng.standard_normal(size)).astype(np.complex64)[offset:]
    k = min(cut, n_groups) * osr
    whole = _boxcar(x, osr)
    assert np.array_equal(np.concatenate([_boxcar(x[:k], osr), _boxcar(x[k:], osr)]), whole)
    assert np.allclose(whole, x.astype(np.complex128).reshape(-1, osr).sum(axis=1), rtol=1e-5, atol=1e-2)
    assert whole.flags.c_contiguous and not np.shares_memory(whole, x)
