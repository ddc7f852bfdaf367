"""The simulated stream: chunk-independent, deterministic, its ground truth where the packets really are."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import LoRaConfig, downchirp, packet_waveform
from lorarffi.errors import ConfigError
from lorarffi.sim import Session, StreamSimulator, make_fleet, simulate_stream

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
FLEET = make_fleet(3, seed=4)
N_SAMPLES = 1_500_000


@pytest.fixture(scope="module")
def stream():
    return simulate_stream(
        FLEET,
        CFG,
        duration_s=N_SAMPLES / CFG.fs_hz,
        rogues=1,
        seed=7,
        snr_db=(10.0, 25.0),
        session=Session(day=1, minutes_since_power_on=3.0, place=2),
    )


@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(1, 400_000), max_size=5))
def test_stream_is_the_same_whatever_the_chunking(cuts, stream):
    iq, events = stream
    sim = StreamSimulator(
        FLEET,
        CFG,
        rogues=1,
        seed=7,
        snr_db=(10.0, 25.0),
        session=Session(day=1, minutes_since_power_on=3.0, place=2),
    )
    parts, pos = [], 0
    for n in [*cuts, N_SAMPLES - sum(cuts)]:
        n = min(max(n, 0), N_SAMPLES - pos)
        start, chunk = sim.read(n)
        assert start == pos and chunk.size == n and chunk.dtype == np.complex64
        parts.append(chunk)
        pos += n
    # exact: every sample is the same noise block sample plus the same rendered packet sample, one float32
    # addition, whatever the chunk it falls in
    np.testing.assert_array_equal(np.concatenate(parts), iq)
    assert sim.events == events


def test_other_seed_gives_another_stream(stream):
    iq, events = stream
    other, other_events = simulate_stream(FLEET, CFG, duration_s=0.5, rogues=1, seed=8)
    assert not np.allclose(other, iq[: other.size])
    assert [e.start for e in other_events] != [e.start for e in events][: len(other_events)]


def test_events_are_ordered_do_not_overlap_and_flag_rogues(stream):
    _, events = stream
    assert len(events) >= 4
    starts = np.array([e.start for e in events])
    assert np.all(np.diff(starts) > 0)
    assert all(a.stop <= b.start for a, b in zip(events, events[1:], strict=False))
    fleet_ids = {d.device_id for d in FLEET}
    for e in events:
        assert e.is_rogue == (e.device_id not in fleet_ids)
        if e.is_rogue:
            assert e.device_id > max(fleet_ids)
        assert 10.0 <= e.snr_db <= 25.0 and e.n_preamble == CFG.preamble_symbols and e.sync_word == 0x12


def test_each_event_start_is_where_the_preamble_is(stream):
    """Dechirp check: after removing the true CFO, each preamble symbol cut at the event's start dechirps to
    bin 0, and the correlation with the ideal packet peaks at the stated start (within one sample)."""
    iq, events = stream
    sps = CFG.samples_per_symbol
    down = downchirp(CFG)
    ideal = packet_waveform(CFG)[: (CFG.preamble_symbols + 2) * sps]
    for e in events:
        seg = iq[e.start : e.start + CFG.preamble_symbols * sps].astype(np.complex128)
        seg = seg * np.exp(-2j * np.pi * e.cfo_hz * np.arange(seg.size) / CFG.fs_hz)
        sym = seg.reshape(CFG.preamble_symbols, sps) * down
        spec = np.abs(np.fft.fft(sym, axis=1))
        peak = np.argmax(spec, axis=1)
        assert np.all((peak <= 1) | (peak >= sps - 1)), peak
        lags = np.arange(-8, 9)
        w = iq[e.start - 8 : e.start + ideal.size + 8].astype(np.complex128)
        w = w * np.exp(-2j * np.pi * e.cfo_hz * (np.arange(w.size) - 8) / CFG.fs_hz)
        corr = [abs(np.vdot(ideal, w[8 + k : 8 + k + ideal.size])) for k in lags]
        assert abs(int(lags[np.argmax(corr)])) <= 1
    # negative control: one symbol past the preamble (the sync word) does not dechirp to bin 0
    e = events[0]
    seg = iq[e.start + 9 * sps : e.start + 10 * sps] * np.exp(
        -2j * np.pi * e.cfo_hz * np.arange(9 * sps, 10 * sps) / CFG.fs_hz
    )
    assert np.argmax(np.abs(np.fft.fft(seg * down))) not in (0, 1, sps - 1)


def test_event_snr_is_the_in_band_snr_of_the_samples(stream):
    iq, events = stream
    sim = StreamSimulator(FLEET, CFG, rogues=1, seed=7)
    noise_in_band = sim.noise_power * CFG.bw_hz / CFG.fs_hz
    f = np.fft.fftfreq(CFG.preamble_samples, 1 / CFG.fs_hz)
    band = np.abs(f) <= CFG.bw_hz / 2
    for e in events:
        seg = iq[e.start : e.start + CFG.preamble_samples]
        power_in_band = np.sum(np.abs(np.fft.fft(seg)[band]) ** 2) / seg.size**2
        measured = 10 * np.log10(power_in_band / noise_in_band - 1)
        # statistical: the 1,024 in-band noise bins scatter by 3 % of the noise (0.3 % of a 10 dB signal) and
        # the signal-noise cross term by sqrt(2 / (1024 snr)) = 1.4 % of the signal: 0.06 dB at 10 dB. The
        # simulator sets the SNR from the whole packet's power, measured here in-band on the preamble, which
        # reads a little lower (tenths of a dB): 1 dB bounds both
        assert measured == pytest.approx(e.snr_db, abs=1.0)


def test_stream_cfo_follows_the_device_drift(stream):
    _, events = stream
    by_id = {d.device_id: d for d in FLEET}
    for e in events:
        if e.device_id in by_id:
            d = by_id[e.device_id]
            t_s = 180.0 + e.start / CFG.fs_hz
            # the event's CFO is the drift curve plus a standard normal draw times cfo_jitter_hz
            assert e.cfo_hz == pytest.approx(float(d.mean_cfo_hz(1, t_s)), abs=5 * d.cfo_jitter_hz)


def test_stream_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="rogues="):
        StreamSimulator(FLEET, CFG, rogues=-1)
    with pytest.raises(ConfigError, match="mean_interval_s="):
        StreamSimulator(FLEET, CFG, mean_interval_s=0.0)
    with pytest.raises(ConfigError, match="n_samples="):
        StreamSimulator(FLEET, CFG).read(-5)


DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "grlora_sdr"


@pytest.mark.parametrize("name", ["sf8_bw125k_fs1M_sync12_pre8", "sf11_bw250k_fs1M_sync12_pre8"])
def test_simulated_packet_head_matches_an_independent_lora_transmitter(name):
    """The simulator's packet (ideal hardware) equals gr-lora_sdr's up to the payload: preamble, sync word and
    SFD, sample by sample, so simulated streams are standard-conformant packets."""
    meta = DATA / f"{name}.sigmf-meta"
    if not meta.exists():
        pytest.skip(f"{meta} not available")
    from lorarffi.datasets.recording import open_recording
    from lorarffi.sim.impairments import pll_packet_waveform

    sf = int(name.split("_")[0][2:])
    bw = float(name.split("_")[1][2:-1]) * 1e3
    cfg = LoRaConfig(sf=sf, bw_hz=bw, fs_hz=1e6, sync_word=0x12)
    head = int(round((8 + 4.25) * cfg.samples_per_symbol))
    with open_recording(meta) as rec:
        for ann in rec.annotations[:2]:
            ref = rec.read(ann["core:sample_start"], head).astype(np.complex128)
            sim = pll_packet_waveform(cfg, n_samples=head + 10)[:head]
            rot = np.vdot(sim, ref) / np.vdot(sim, sim)  # unknown carrier phase / amplitude
            err = np.abs(ref - rot * sim) / np.abs(rot)
            assert np.median(err) < 0.02 and abs(abs(rot) - np.abs(ref).mean()) < 0.05
            # negative control: the wrong sync word does not match
            other = pll_packet_waveform(cfg, n_samples=head, sync_word=0x34)
            sync = slice(8 * cfg.samples_per_symbol, 10 * cfg.samples_per_symbol)
            assert np.median(np.abs(ref - rot * other)[sync]) > 0.2 > np.max(err[sync])
