"""Drift tracking in the live pipeline: a fleet whose CFO has moved since the model was trained moves the
gate's tracked centres towards the devices' true CFOs; with tracking off they stay where training put them.

Ground truth: the virtual radio's transmission events (each packet's true CFO and device). The model is
trained on each device's first packets after power-on (cold start); the live stream comes three minutes later,
when the warm-up drift has moved every device's CFO by hundreds of Hz (the simulator's crystals settle with
time constants of about five minutes), while the two devices stay about a kHz apart, so the CFO-weighted gate
accepts their packets with high confidence and feeds them to tracking.
"""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.capture.sim_source import SimSource
from lorarffi.dsp.config import LoRaConfig
from lorarffi.live.pipeline import LivePipeline
from lorarffi.live.sinks import Sink
from lorarffi.live.stages import ClassifierStage

pytestmark = pytest.mark.slow

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
N_DEVICES = 2
STREAM_S = 4.0
MINUTES_AFTER_TRAINING = 3.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model trained on each device's first 24 packets after power-on (0.3 s apart)."""
    from lorarffi.rffi.hybrid import GateParams
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    ps = simulate_preamble_set(
        make_fleet(N_DEVICES, seed=0),
        CFG,
        24,
        session=Session(minutes_since_power_on=0.0),
        rng=np.random.default_rng(3),
        snr_db=(20.0, 30.0),
    )
    out = tmp_path_factory.mktemp("drift") / "m"
    # The Hz gate of the moving-average rule this test checks (no weight floor, no re-acquisition).
    gate = GateParams(margin_hz=1000.0, cfo_weight_std_hz=300.0, cfo_weight_floor=0.0, reacquire_packets=0)
    train(ps.preambles, ps.device_ids, CFG, out, TrainConfig(epochs=2, batch_size=16, seed=0, gate=gate))
    return out


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list = []

    def on_decisions(self, records, packets) -> None:
        self.records += records


def run_live(
    model_dir, *, gate_tracking: bool = True, stage_track: bool = True, duration_s: float = STREAM_S
):
    """The fleet three minutes later through the live pipeline; returns (classifier, records, true events)."""
    from lorarffi.rffi.inference import load_classifier

    clf = load_classifier(model_dir)
    clf.set_tracking(gate_tracking)
    source = SimSource(
        CFG,
        n_devices=N_DEVICES,
        fleet_seed=0,
        seed=7,
        duration_s=duration_s,
        snr_db=(20.0, 30.0),
        mean_interval_s=0.05,
        session={"minutes_since_power_on": MINUTES_AFTER_TRAINING},
    )
    sink = Collect()
    LivePipeline(source, CFG, decider=ClassifierStage(clf, track=stage_track), sinks=[sink]).run()
    n_total = int(round(duration_s * CFG.fs_hz))
    events = [e for e in source.events if e.start + e.n_samples <= n_total]
    return clf, sink.records, events


def test_live_drift_tracking_moves_the_gate_towards_the_devices_true_cfo(model_dir) -> None:
    clf, records, events = run_live(model_dir)
    gate = clf.gate
    assert len(records) == len(events) >= 20
    assert all(abs(r.start - e.start) <= 2 for r, e in zip(records, events, strict=True))
    assert [r.device for r in records] == [e.device_id for e in events]
    estimate_error_hz = max(abs(r.cfo_hz - e.cfo_hz) for r, e in zip(records, events, strict=True))
    a = gate.params.track_alpha
    for k, device in enumerate(gate.device_ids.tolist()):
        true_cfo = np.array([e.cfo_hz for e in events if e.device_id == device])
        truth_hz = float(true_cfo.mean())
        trained_hz = float(gate.mean_hz[k])
        m = int(gate.n_updates[k])
        assert abs(truth_hz - trained_hz) >= 150.0  # the premise: the CFO moved since training
        assert m == true_cfo.size  # every packet of the device was accepted confidently and tracked
        # m exponential updates of weight a towards packets at CFOs x_i start from the training mean and end
        # at truth + (trained - truth) (1 - a)^m + sum_i w_i (x_i - truth), with weights w_i summing to
        # 1 - (1 - a)^m (no step reaches max_step_hz here: a * |trained - truth| < 10 Hz). The x_i are the
        # detector's estimates, so |x_i - truth| <= the true CFOs' spread + the estimation error.
        expected_hz = truth_hz + (trained_hz - truth_hz) * (1 - a) ** m
        bound_hz = (1 - (1 - a) ** m) * (float(np.abs(true_cfo - truth_hz).max()) + estimate_error_hz)
        assert a * abs(trained_hz - truth_hz) < gate.params.max_step_hz
        assert abs(float(gate.center_hz[k]) - expected_hz) <= bound_hz
        assert abs(float(gate.center_hz[k]) - truth_hz) < abs(trained_hz - truth_hz) - 50.0  # moved, visibly


@pytest.mark.parametrize(("gate_tracking", "stage_track"), [(False, True), (True, False)])
def test_with_tracking_off_the_gate_keeps_its_training_statistics(
    model_dir, gate_tracking, stage_track
) -> None:
    clf, records, events = run_live(
        model_dir, gate_tracking=gate_tracking, stage_track=stage_track, duration_s=2.0
    )
    gate = clf.gate
    assert len(records) == len(events) >= 10 and all(r.verdict == "accept" for r in records)
    np.testing.assert_array_equal(gate.center_hz, gate.mean_hz)  # untouched: the very values loaded
    np.testing.assert_array_equal(gate.tracked_std_hz, gate.std_hz)
    np.testing.assert_array_equal(gate.n_updates, 0)
