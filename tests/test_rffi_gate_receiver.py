"""The CFO gate's receiver offset: another receiver moves every device by the same offset, which the gate
learns from the CNN's confident calls (streaming, and over a whole recording at once), while a shift of part
of the fleet is never taken for it.

Ground truth: the offsets the tests put on the packets, and the gate's rule (module docstring of
lorarffi.rffi.hybrid).
"""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.errors import ConfigError
from lorarffi.rffi.hybrid import CfoGate, GateParams, ppm_to_hz

CARRIER_HZ = 868.1e6
N_DEV = 12
SPREAD_HZ = 15.0  # per-packet CFO jitter of every device, Hz


def _gate(**kw) -> CfoGate:
    """A gate of N_DEV devices 6 kHz apart (training CFO jitter SPREAD_HZ), carrier 868.1 MHz: a 10 ppm
    receiver offset (8681 Hz) puts a packet 2681 Hz from the nearest other device, outside its window (margin
    2.5 ppm = 2170 Hz plus about 4 jitter standard deviations)."""
    rng = np.random.default_rng(0)
    centres = np.arange(N_DEV) * 6000.0 - 33000.0
    idx = np.repeat(np.arange(N_DEV), 50)
    cfo = centres[idx] + SPREAD_HZ * rng.standard_normal(idx.size)
    return CfoGate.fit(cfo, idx, np.arange(1, N_DEV + 1), GateParams(carrier_hz=CARRIER_HZ, **kw))


def _packets(gate: CfoGate, idx: np.ndarray, shift_hz: np.ndarray, seed: int = 1):
    """CFOs of packets of classes ``idx`` moved by ``shift_hz`` (per class), and CNN logits that call every
    packet right with probability 0.99."""
    rng = np.random.default_rng(seed)
    cfo = gate.mean_hz[idx] + shift_hz[idx] + SPREAD_HZ * rng.standard_normal(idx.size)
    logits = np.full((idx.size, N_DEV), np.log(0.01 / (N_DEV - 1)))
    logits[np.arange(idx.size), idx] = np.log(0.99)
    return cfo, logits


def _stream(gate: CfoGate, cfo: np.ndarray, logits: np.ndarray, batch: int = 8) -> np.ndarray:
    """Gate and track packets in batches, as Classifier.decide does; returns the gated class indices."""
    out = []
    for s in range(0, cfo.size, batch):
        z, f = logits[s : s + batch], cfo[s : s + batch]
        res = gate.apply(z, f)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        gate.update(f, res.index, res.confidence, cnn_index=p.argmax(axis=1), cnn_confidence=p.max(axis=1))
        out.append(res.index)
    return np.concatenate(out)


def test_a_receiver_10_ppm_off_is_learned_and_its_packets_accepted() -> None:
    gate = _gate()
    rx_hz = float(ppm_to_hz(10.0, CARRIER_HZ))  # 8681 Hz: beyond every device's window
    shift = np.full(N_DEV, rx_hz)
    shift[0] += float(ppm_to_hz(2.0, CARRIER_HZ))  # one device has also moved on its own (an outlier)
    idx = np.tile(np.arange(N_DEV), 20)  # devices interleaved, as on the air
    cfo, logits = _packets(gate, idx, shift)
    got = _stream(gate, cfo, logits)
    # The first window of confident calls (receiver_window = 64 packets at most) sees every device; the offset
    # is the median of device medians (the outlier does not pull it): within 3 jitter standard deviations.
    assert gate.receiver_offset_hz == pytest.approx(rx_hz, abs=3 * SPREAD_HZ)
    window = max(gate.params.receiver_window, 3 * N_DEV)  # the window of the first estimate
    assert np.mean(got[window:] == idx[window:]) == 1.0
    # Before the offset is learned the packets were rejected, never given to another device (but for the
    # outlier: its extra 2 ppm puts it inside device 2's window).
    early = slice(0, max(window, 3 * N_DEV))
    ok = (got[early] == idx[early]) | (got[early] == -1) | (idx[early] == 0)
    assert np.all(ok)
    # Each device's own drift is then tracked relative to the receiver: device 1 creeping up by 300 Hz moves
    # its centre (exponential average, weight 0.02 per packet: 1 - 0.98**150 = 95 % of the way).
    drift = np.zeros(N_DEV)
    drift[1] = 300.0
    idx2 = np.tile(np.arange(N_DEV), 150)
    cfo2, logits2 = _packets(gate, idx2, shift + drift, seed=2)
    _stream(gate, cfo2, logits2)
    assert gate.center_hz[1] - gate.mean_hz[1] == pytest.approx(0.95 * 300.0, abs=5 * SPREAD_HZ)
    assert gate.receiver_offset_hz == pytest.approx(rx_hz, abs=3 * SPREAD_HZ)


def test_no_receiver_shift_leaves_the_offset_at_exactly_zero() -> None:
    gate = _gate()
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, np.zeros(N_DEV))
    _stream(gate, cfo, logits)
    assert gate.receiver_offset_hz == 0.0


def test_a_shift_that_leaves_the_devices_in_their_windows_is_not_a_receiver_offset() -> None:
    gate = _gate()
    # 7 of 12 moved by 2 ppm, within the 2.5 ppm margin: the larger group agrees, but nothing needs moving.
    shift = np.where(np.arange(N_DEV) < 7, float(ppm_to_hz(2.0, CARRIER_HZ)), 0.0)
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, shift)
    _stream(gate, cfo, logits)
    assert gate.receiver_offset_hz == 0.0


def test_half_the_fleet_moved_by_2_ppm_is_not_a_receiver_offset() -> None:
    gate = _gate()
    shift = np.where(np.arange(N_DEV) % 2 == 0, float(ppm_to_hz(2.0, CARRIER_HZ)), 0.0)
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, shift)
    got = _stream(gate, cfo, logits)
    assert gate.receiver_offset_hz == 0.0
    assert np.mean(got == idx) == 1.0  # kept by the 2.5 ppm margin and re-acquisition


def test_a_recording_of_one_device_after_another_is_calibrated_as_a_whole() -> None:
    rx_hz = float(ppm_to_hz(-7.0, CARRIER_HZ))
    idx = np.repeat(np.arange(N_DEV), 20)  # device-ordered, as a stored dataset
    streaming = _gate()
    cfo, logits = _packets(streaming, idx, np.full(N_DEV, rx_hz))
    got_streaming = _stream(streaming, cfo, logits)
    whole = _gate()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert whole.calibrate_receiver(cfo, p.argmax(axis=1), p.max(axis=1)) == pytest.approx(
        rx_hz, abs=3 * SPREAD_HZ
    )
    assert np.mean(_stream(whole, cfo, logits) == idx) == 1.0
    # Streaming, the first devices go by before three of them are seen.
    assert np.mean(got_streaming == idx) < 1.0


def test_a_receiver_offset_and_an_environment_step_of_the_crystal_devices_together() -> None:
    # Another receiver (+10 ppm for every device) in another environment, where the 5 crystal devices of 12
    # also moved by -1.7 ppm and the 7 TCXO ones did not: the larger group sets the offset, the margin keeps
    # the others.
    gate = _gate()
    rx_hz = float(ppm_to_hz(10.0, CARRIER_HZ))
    shift = np.full(N_DEV, rx_hz)
    shift[:5] += float(ppm_to_hz(-1.7, CARRIER_HZ))
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, shift)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert gate.calibrate_receiver(cfo, p.argmax(axis=1), p.max(axis=1)) == pytest.approx(
        rx_hz, abs=3 * SPREAD_HZ
    )
    assert np.mean(gate.apply(logits, cfo).index == idx) == 1.0


def test_a_few_devices_agreeing_are_not_enough() -> None:
    gate = _gate(receiver_min_devices=3)
    idx = np.repeat([0, 1], 30)  # two devices only
    cfo, logits = _packets(gate, idx, np.full(N_DEV, 5000.0))
    _stream(gate, cfo, logits)
    assert gate.receiver_offset_hz == 0.0
    # Three devices agree on 10 ppm, the nine others are scattered far beyond it (3 ppm apart): moving by the
    # three's offset would leave most devices outside their windows, so it is not taken.
    gate = _gate()
    shift = float(ppm_to_hz(10.0, CARRIER_HZ)) + np.where(
        np.arange(N_DEV) < 3, 0.0, float(ppm_to_hz(3.0, CARRIER_HZ)) * np.arange(N_DEV)
    )
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, shift)
    _stream(gate, cfo, logits)
    assert gate.receiver_offset_hz == 0.0


def test_a_known_offset_applies_from_the_start_and_survives_saving() -> None:
    gate = _gate(receiver_offset_ppm=10.0)
    rx_hz = float(ppm_to_hz(10.0, CARRIER_HZ))
    assert gate.receiver_offset_hz == rx_hz
    idx = np.arange(N_DEV)
    cfo, logits = _packets(gate, idx, np.full(N_DEV, rx_hz))
    assert np.array_equal(gate.apply(logits, cfo).index, idx)
    gate.receiver_offset_hz = 1234.5
    assert CfoGate.from_dict(gate.to_dict()).receiver_offset_hz == 1234.5
    gate.reset_tracking()
    assert gate.receiver_offset_hz == rx_hz


def test_off_means_off_and_old_saved_gates_keep_their_behaviour() -> None:
    gate = _gate(receiver_tracking=False)
    idx = np.tile(np.arange(N_DEV), 20)
    cfo, logits = _packets(gate, idx, np.full(N_DEV, float(ppm_to_hz(10.0, CARRIER_HZ))))
    assert np.all(_stream(gate, cfo, logits) == -1)
    assert gate.receiver_offset_hz == 0.0
    old = {k: v for k, v in GateParams().to_dict().items() if k != "carrier_hz" and "receiver" not in k}
    old.update(margin_ppm=None, cfo_weight_std_ppm=None)
    assert GateParams.from_dict(old).receiver_tracking is False


@pytest.mark.parametrize(
    "bad",
    [
        {"receiver_window": 0},
        {"receiver_min_devices": 1.5},
        {"receiver_offset_ppm": np.nan},
        {"receiver_min_confidence": 1.5},
    ],
)
def test_bad_receiver_parameters_are_refused_by_name(bad: dict) -> None:
    ((name, _),) = bad.items()
    with pytest.raises(ConfigError, match=name):
        GateParams(**bad)
