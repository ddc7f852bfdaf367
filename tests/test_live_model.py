"""The live pipeline with a model: file, ZeroMQ and SoapySDR sources give the decisions the classifier
gives offline to the offline detector's packets; the ``live`` command with ``--model``.

A tiny model is trained here through :func:`lorarffi.rffi.train.train` on simulated preambles of the fleet
that transmits in the test stream (its accuracy does not matter: the decisions are compared, not graded).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from lorarffi.capture.sources import open_source
from lorarffi.cli import main
from lorarffi.dsp.config import LoRaConfig
from lorarffi.live.pipeline import LivePipeline
from lorarffi.live.stages import ClassifierStage

pytestmark = pytest.mark.slow

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    ps = simulate_preamble_set(
        make_fleet(3, seed=0), CFG, 24, session=Session(), rng=np.random.default_rng(3), snr_db=(20.0, 30.0)
    )
    out = tmp_path_factory.mktemp("model") / "m"
    train(ps.preambles, ps.device_ids, CFG, out, TrainConfig(epochs=2, batch_size=16, seed=0))
    return out


@pytest.fixture(scope="module")
def stream(sim_stream):
    assert sim_stream.cfg == CFG
    return sim_stream.path, sim_stream.iq


@pytest.fixture(scope="module")
def reference(stream, model_dir):
    """Offline: the detector over the whole stream, then one classify call on all its packets (in the
    model's view of a packet, :meth:`Classifier.packet_preambles`)."""
    from lorarffi.dsp.detect import StreamDetector
    from lorarffi.rffi.inference import load_classifier

    _, iq = stream
    det = StreamDetector(CFG)
    packets = det.process(iq) + det.flush()
    clf = load_classifier(model_dir)
    dec = clf.classify(clf.packet_preambles(packets), np.array([p.cfo_hz for p in packets]), track=False)
    return [(p.start, int(d), v) for p, d, v in zip(packets, dec.device_id, dec.verdict, strict=True)]


class Collect:
    def __init__(self) -> None:
        self.records: list = []

    def on_samples(self, start, iq) -> None:
        pass

    def on_decisions(self, records, packets) -> None:
        self.records += records

    def on_progress(self, status) -> None:
        pass

    def close(self, summary=None) -> None:
        pass


def decisions(source, model_dir, **kw) -> list[tuple]:
    from lorarffi.rffi.inference import load_classifier

    clf = load_classifier(model_dir)
    clf.set_tracking(False)  # so every run decides from the same state as the offline reference
    sink = Collect()
    summary = LivePipeline(source, CFG, decider=ClassifierStage(clf), sinks=[sink], **kw).run()
    assert summary.source_stats.n_lost_samples == 0 and summary.n_packets == len(sink.records)
    return [(r.start, r.device, r.verdict) for r in sink.records]


def test_file_soapy_and_zmq_sources_give_the_offline_decisions(
    stream, model_dir, reference, replay_module
) -> None:
    from support import gr_message

    path, iq = stream
    assert len(reference) >= 5
    assert (
        decisions(open_source(f"file:{path}", format="cf32", fs_hz=1e6, chunk_samples=30_000), model_dir)
        == reference
    )

    assert decisions(open_source(f"soapy:driver=replay,file={path},rate=1e6"), model_dir) == reference

    import zmq

    from lorarffi.capture.zmq_source import ZmqSource

    pub = zmq.Context.instance().socket(zmq.PUSH)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()

    def send() -> None:
        for pos in range(0, iq.size, 16_384):
            pub.send(gr_message(iq[pos : pos + 16_384], offset=pos))

    source = ZmqSource(endpoint, fs_hz=1e6, pattern="pull", idle_timeout_s=5.0)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert decisions(source, model_dir, duration_s=iq.size / 1e6) == reference
    finally:
        sender.join(10)
        pub.close()


def test_live_command_with_a_model(stream, model_dir, reference, capsys) -> None:
    path, _ = stream
    rc = main(
        [
            "live",
            "--source",
            f"file:{path}",
            "--format",
            "cf32",
            "--fs-hz",
            "1M",
            "--model",
            str(model_dir),
            "--json",
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    got = lines[:-1]
    assert [g["start"] for g in got] == [r[0] for r in reference]
    assert all(g["verdict"] in ("accept", "unknown") for g in got)
    assert all((g["device"] == -1) == (g["verdict"] == "unknown") for g in got)
    assert {"confidence", "cnn_device", "latency_ms"} <= set(got[0])
    assert lines[-1]["summary"]["n_packets"] == len(reference)


def test_the_classifier_stage_refuses_preambles_at_another_rate_than_the_model(stream, model_dir) -> None:
    import dataclasses

    from lorarffi.dsp.detect import StreamDetector
    from lorarffi.errors import ConfigError
    from lorarffi.rffi.inference import load_classifier

    _, iq = stream
    det = StreamDetector(CFG)
    first = (det.process(iq[:1_000_000]) + det.flush())[0]
    at_2m = dataclasses.replace(first, preamble_fs_hz=2e6)  # as a detector at 2 MS/s would hand it out
    stage = ClassifierStage(load_classifier(model_dir))  # trained at 1 MS/s
    with pytest.raises(ConfigError, match=r"preambles at 2e\+06 Hz but the model was trained at 1e\+06 Hz"):
        stage.decide([at_2m])
    assert len(stage.decide([first])) == 1


def test_the_model_is_warmed_up_once_before_the_first_samples_and_warm_up_leaves_the_gate_alone(
    stream, model_dir
) -> None:
    from lorarffi.capture.file_source import FileSource
    from lorarffi.live.stages import WARM_UP_BATCHES, warm_up
    from lorarffi.rffi.inference import load_classifier

    clf = load_classifier(model_dir)
    assert clf.gate is not None and clf.gate.params.tracking
    before = (clf.gate.center_hz.copy(), clf.gate.tracked_std_hz.copy(), clf.gate.receiver_offset_hz)
    events: list[str] = []
    calls: list[int] = []
    classify = clf.classify

    def counted(preambles, cfo_hz, *, track=True):
        calls.append(len(preambles))
        assert track is False
        return classify(preambles, cfo_hz, track=track)

    clf.classify = counted
    stage = ClassifierStage(clf)
    warm_up(stage)
    assert calls == list(WARM_UP_BATCHES)
    assert np.array_equal(clf.gate.center_hz, before[0])
    assert np.array_equal(clf.gate.tracked_std_hz, before[1])
    assert clf.gate.receiver_offset_hz == before[2]
    clf.classify = classify

    stage2 = ClassifierStage(load_classifier(model_dir))
    real = stage2.warm_up

    def recorded() -> None:
        events.append("warm_up")
        real()

    stage2.warm_up = recorded

    class Order(Collect):
        def on_samples(self, start, iq) -> None:
            events.append("samples")

    path, _ = stream
    source = FileSource(path, format="cf32", fs_hz=CFG.fs_hz)
    LivePipeline(source, CFG, decider=stage2, sinks=[Order()], duration_s=0.2).run()
    assert events[0] == "warm_up" and events.count("warm_up") == 1 and "samples" in events
    warm_up(stage2)  # once per stage
    assert events.count("warm_up") == 1
