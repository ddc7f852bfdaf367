"""The gateway: one wideband capture, several channels and spreading factors, one decision per packet with
its channel and SF; unsupported configurations and same-channel collisions reported, never dropped."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lorarffi.capture.base import ThreadedSource
from lorarffi.cli import main
from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.gateway import GatewayPlan, parse_sfs
from lorarffi.live.pipeline import COLLISION_VERDICT, UNSUPPORTED_VERDICT, LivePipeline
from lorarffi.live.sinks import Sink
from lorarffi.sim import make_fleet
from lorarffi.sim.stream import StreamSimulator, simulate_stream

FS_HZ = 1e6
CENTER_HZ = 868.3e6
CHANNELS_HZ = (868.1e6, 868.3e6, 868.5e6)
SFS = (7, 8, 9)
CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=FS_HZ)
DECIMATION = 4  # the channelizer's choice at 1 MS/s and 125 kHz: 2 samples per chip
# a packet found on a channel maps back to within one channel sample of its start (test_dsp_channelize.py)
START_TOL = DECIMATION


class ArraySource(ThreadedSource):
    """A recording held in memory, delivered in fixed chunks."""

    def __init__(self, iq: np.ndarray, chunk: int = 100_000) -> None:
        super().__init__(fs_hz=FS_HZ, buffer_s=30.0)
        self.name = "array"
        self.iq, self.chunk = iq, chunk

    def _produce(self) -> None:
        for s in range(0, self.iq.size, self.chunk):
            self._emit(s, self.iq[s : s + self.chunk])


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def on_decisions(self, records, packets) -> None:
        self.records += records


class FixedStage:
    """A stand-in decision stage: every packet is device 1, accepted; remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list = []

    def decide(self, packets):
        self.seen += packets
        return [DecisionRecord.for_packet(p, device=1, verdict="accept") for p in packets]


def _run(iq: np.ndarray, **kw) -> tuple:
    sink = Collect()
    plan = GatewayPlan(CENTER_HZ, CHANNELS_HZ, kw.pop("sfs", SFS))
    summary = LivePipeline(ArraySource(iq), CFG, sinks=[sink], gateway=plan, **kw).run()
    return summary, sink.records


@pytest.fixture(scope="module")
def gateway_stream():
    """6 s of a gateway recording: 8 devices on 3 channels at SF7-9, SNR 0-25 dB, overlapping across
    channels."""
    iq, events = simulate_stream(
        make_fleet(8, seed=0), CFG, duration_s=6.0, channels_hz=CHANNELS_HZ, sfs=SFS,
        center_freq_hz=CENTER_HZ, snr_db=(0.0, 25.0), mean_interval_s=0.08, seed=3,
    )
    # packets whose preamble and SFD lie in the recording (the detector needs no more of them)
    sfd_end = {sf: CFG.replace(sf=sf).samples_per_symbol * (CFG.preamble_symbols + 4.25) for sf in SFS}
    return iq, [e for e in events if e.start + sfd_end[e.sf] + 64 < iq.size]


def _match(records, events):
    """Pairs (record, event) with the same start (within START_TOL), or None for a record matching none."""
    starts = np.array([e.start for e in events])
    out = []
    for r in records:
        j = int(np.argmin(np.abs(starts - r.start)))
        out.append((r, events[j] if abs(starts[j] - r.start) <= START_TOL else None))
    return out


def test_every_packet_once_with_its_channel_and_sf(gateway_stream):
    iq, events = gateway_stream
    assert {e.channel_hz for e in events} == set(CHANNELS_HZ) and {e.sf for e in events} == set(SFS)
    overlapping = sum(b.start < a.stop for a, b in zip(events, events[1:], strict=False))
    assert overlapping >= 3  # packets on different channels overlap in time
    summary, records = _run(iq)
    pairs = _match(records, events)
    assert all(e is not None for _, e in pairs)  # no false packets
    assert sorted(e.start for _, e in pairs) == sorted(e.start for e in events)  # each exactly once
    for r, e in pairs:
        assert (r.channel_hz, r.sf) == (e.channel_hz, e.sf)
        assert r.verdict == "detected"  # no clean packet is called a collision
        assert abs(r.cfo_hz - e.cfo_hz) < 50.0
        assert r.time_s == pytest.approx(r.start / FS_HZ)
    assert summary.n_packets == len(events) and summary.verdicts == {"detected": len(events)}
    assert all(math.isfinite(r.latency_ms) for r in records)


class HoleSource(ArraySource):
    """The recording with samples [a, b) never delivered (a gap in the indices)."""

    def __init__(self, iq: np.ndarray, hole: tuple[int, int]) -> None:
        super().__init__(iq)
        self.hole = hole

    def _produce(self) -> None:
        a, b = self.hole
        for lo, hi in ((0, a), (b, self.iq.size)):
            for s in range(lo, hi, self.chunk):
                self._emit(s, self.iq[s : min(s + self.chunk, hi)])


def test_after_lost_samples_packets_keep_their_true_starts(gateway_stream):
    iq, events = gateway_stream
    hole = (3_000_000, 3_100_000)
    sink = Collect()
    summary = LivePipeline(HoleSource(iq, hole), CFG, sinks=[sink],
                           gateway=GatewayPlan(CENTER_HZ, CHANNELS_HZ, SFS)).run()
    assert summary.source_stats.n_lost_samples == hole[1] - hole[0]
    # (a packet whose preamble began in the gap may be found from the up-chirps after it: start unknown)
    after = [r for r in sink.records if r.start >= hole[1] + 50_000]
    assert after and all(e is not None and (e.channel_hz, e.sf) == (r.channel_hz, r.sf)
                         for r, e in _match(after, events))
    clear = [e for e in events if e.start >= hole[1] + 50_000]  # well after the gap: all found again
    assert {e.start for e in clear} <= {e.start for r, e in _match(after, events) if e is not None}


def test_unsupported_configurations_are_reported_and_counted(gateway_stream):
    iq, events = gateway_stream
    stage = FixedStage()
    summary, records = _run(iq, decider=stage)  # the stage holds (cfg.sf, cfg.bw_hz) = (7, 125 kHz) only
    assert len(records) == len(events)
    by_sf = {sf: [r.verdict for r in records if r.sf == sf] for sf in SFS}
    assert set(by_sf[7]) == {"accept"} and len(stage.seen) == len(by_sf[7])
    assert set(by_sf[8] + by_sf[9]) == {UNSUPPORTED_VERDICT}
    assert summary.verdicts[UNSUPPORTED_VERDICT] == len(by_sf[8]) + len(by_sf[9]) > 0
    assert all(r.device is None for r in records if r.verdict == UNSUPPORTED_VERDICT)
    # a mapping from (SF, bandwidth) to stage: two configurations, two stages
    s7, s9 = FixedStage(), FixedStage()
    _, records = _run(iq, deciders={(7, 125e3): s7, (9, 125e3): s9})
    assert len(s7.seen) == sum(r.sf == 7 for r in records) and len(s9.seen) == sum(r.sf == 9 for r in records)
    assert {r.verdict for r in records if r.sf == 8} == {UNSUPPORTED_VERDICT}


def _place(iq: np.ndarray, cfg: LoRaConfig, start: float, channel_hz: float, amp: float, seed: int) -> None:
    """Add a packet at exact (fractional) input index ``start`` on a channel."""
    rng = np.random.default_rng(seed)
    i0 = math.floor(start)
    pk = packet_waveform(cfg, rng.integers(0, cfg.n_chips, 16), cfo_hz=float(rng.uniform(-8e3, 8e3))
                         + channel_hz - CENTER_HZ, t0_s=-(start - i0) / FS_HZ,
                         phase_rad=float(rng.uniform(0, 2 * np.pi)))
    iq[i0 : i0 + pk.size] += (amp * pk).astype(np.complex64)


def _noise(n: int) -> np.ndarray:
    rng = np.random.default_rng(99)
    # in-band (125 kHz) noise power 0.01 of a unit packet: SNR 20 dB at amplitude 1
    sigma = math.sqrt(0.01 * FS_HZ / 125e3 / 2)
    return (sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def test_overlapping_packets_on_different_channels_or_sfs_are_all_found():
    iq = _noise(1_200_000)
    c7, c8 = CFG, CFG.replace(sf=8)
    placed = [  # (start, channel, sf): all four overlap in time
        (100_000.3, 868.1e6, 7), (101_500.0, 868.5e6, 7), (102_250.7, 868.1e6, 8), (103_000.0, 868.3e6, 7),
    ]
    for k, (s, ch, sf) in enumerate(placed):
        _place(iq, c7 if sf == 7 else c8, s, ch, 1.0, seed=k)
    summary, records = _run(iq, sfs=(7, 8))
    got = sorted((r.channel_hz, r.sf, r.start) for r in records)
    want = sorted((ch, sf, s) for s, ch, sf in placed)
    assert len(got) == len(want)
    for (gch, gsf, gs), (wch, wsf, ws) in zip(got, want, strict=True):
        assert (gch, gsf) == (wch, wsf) and abs(gs - ws) <= START_TOL
    assert summary.verdicts == {"detected": 4}


@pytest.mark.parametrize(("offset_symbols", "amp"), [(3.0, 0.8), (14.5, 1.0)])
def test_same_channel_same_sf_overlap_is_a_collision_not_a_fingerprint(offset_symbols, amp):
    """The second packet starts during the first's preamble (both windows shared) or during its payload
    (the first's window is clean, the second's holds the first's payload)."""
    iq = _noise(600_000)
    sps = CFG.samples_per_symbol
    first, second = 100_000.0, 100_000.0 + offset_symbols * sps + 37.5
    _place(iq, CFG, first, 868.3e6, 1.0, seed=1)
    _place(iq, CFG, second, 868.3e6, amp, seed=2)
    _place(iq, CFG, 400_000.0, 868.3e6, 1.0, seed=3)  # a lone packet after them: not a collision
    stage = FixedStage()
    summary, records = _run(iq, decider=stage, sfs=(7,))
    verdicts = {round(r.start / sps): r.verdict for r in records}
    lone = verdicts.pop(round(400_000 / sps))
    assert lone == "accept"
    first_clean = offset_symbols > CFG.preamble_symbols + 4.25  # the second starts after the first's SFD
    first_verdict = verdicts.pop(round(first / sps), None)
    if first_clean:  # the first packet's fingerprint window is its own: decided as usual
        assert first_verdict == "accept"
        assert verdicts.pop(round(second / sps)) == COLLISION_VERDICT  # found, and its window is shared
    else:
        assert first_verdict in (COLLISION_VERDICT, None)
    # every other decision about the overlapping pair is a collision, and none of theirs went to the stage
    assert set(verdicts.values()) <= {COLLISION_VERDICT}
    n_collisions = sum(r.verdict == COLLISION_VERDICT for r in records)
    assert n_collisions >= 1 and summary.verdicts[COLLISION_VERDICT] == n_collisions
    assert len(stage.seen) == 1 + first_clean


def test_simulated_gateway_stream_is_chunk_independent_and_keeps_single_channel_streams():
    kw = dict(channels_hz=CHANNELS_HZ, sfs=SFS, mean_interval_s=0.05, seed=5)
    a = StreamSimulator(make_fleet(4, seed=1), CFG, **kw)
    b = StreamSimulator(make_fleet(4, seed=1), CFG, **kw)
    _, whole = a.read(700_000)
    parts = [b.read(n)[1] for n in (1, 123_456, 300_000, 276_543)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert a.events == b.events and all(e.channel_hz in CHANNELS_HZ and e.sf in SFS for e in a.events)
    assert len({(a.assignments[d][0], a.assignments[d][1]) for d in a.assignments}) > 1
    # same channel: never overlapping
    for ch in CHANNELS_HZ:
        evs = [e for e in a.events if e.channel_hz == ch]
        assert all(y.start >= x.stop for x, y in zip(evs, evs[1:], strict=False))
    # long SF12 packets outlast short SF7 ones started after them on other channels: small reads still add
    # every packet that is on the air
    kw = dict(channels_hz=CHANNELS_HZ, sfs=(7, 12), mean_interval_s=0.02, seed=6, multipath=False)
    a = StreamSimulator(make_fleet(6, seed=1), CFG, **kw)
    b = StreamSimulator(make_fleet(6, seed=1), CFG, **kw)
    _, whole = a.read(1_500_000)
    np.testing.assert_array_equal(np.concatenate([b.read(30_000)[1] for _ in range(50)]), whole)
    assert any(x.stop > y.stop for x, y in zip(a.events, a.events[1:], strict=False))
    # no channel plan: the events carry no channel and no SF
    plain = StreamSimulator(make_fleet(4, seed=1), CFG, seed=5)
    plain.read(300_000)
    assert all(e.channel_hz is None and e.sf is None for e in plain.events)


def test_parse_sfs():
    assert parse_sfs("7-12") == (7, 8, 9, 10, 11, 12) and parse_sfs("7,9") == (7, 9)
    for bad in ("", "12-7", "5", "7-13", "x"):
        with pytest.raises(Exception, match="--sf"):
            parse_sfs(bad)


def test_cli_live_gateway_decisions_carry_channel_and_sf(gateway_stream, tmp_path, capsys):
    iq, events = gateway_stream
    path = tmp_path / "gw.cf32"
    iq.tofile(path)
    rc = main(["live", "--source", f"file:{path}", "--format", "cf32", "-s", "1M", "-f", "868.3M",
               "--channels", "868.1M,868.3M,868.5M", "--sf", "7-9", "--json", "--no-view"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    decisions = [d for d in lines if "verdict" in d]
    assert len(decisions) == len(events)
    truth = {e.start: e for e in events}
    for d in decisions:
        e = min(truth.values(), key=lambda e: abs(e.start - d["start"]))
        assert abs(e.start - d["start"]) <= START_TOL
        assert (d["channel_hz"], d["sf"]) == (e.channel_hz, e.sf)
    # without --channels and with one SF: the single-channel pipeline, no channel or SF in the records
    rc = main(["live", "--source", f"file:{path}", "--format", "cf32", "-s", "1M", "--sf", "7", "--json",
               "--no-view", "--duration-s", "1"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all("channel_hz" not in d and "sf" not in d for d in lines if "verdict" in d)


def test_cli_simulate_gateway_recording_round_trip(tmp_path, capsys):
    meta = tmp_path / "gw.sigmf-meta"
    assert main(["simulate", "--stream", str(meta), "--n-devices", "6", "--duration-s", "3", "-f", "868.3M",
                 "--channels", "868.1M,868.3M,868.5M", "--sf", "7-8", "--snr-db", "5:25", "--seed", "2",
                 "--json"]) == 0
    annotations = json.loads(meta.read_text())["annotations"]
    assert {a["lorarffi:channel_hz"] for a in annotations} <= set(CHANNELS_HZ)
    assert {a["lorarffi:sf"] for a in annotations} <= {7, 8} and len(annotations) >= 3
    capsys.readouterr()
    # the recording's own centre frequency (SigMF) places the channels: no -f needed
    assert main(["live", "--source", f"file:{meta}", "--channels", "868.1M,868.3M,868.5M", "--sf", "7-8",
                 "--json", "--no-view"]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"verdict"' in line]
    got = sorted((d["start"], d["channel_hz"], d["sf"]) for d in decisions)
    want = sorted((a["core:sample_start"], a["lorarffi:channel_hz"], a["lorarffi:sf"]) for a in annotations)
    assert len(got) == len(want)
    for (gs, gch, gsf), (ws, wch, wsf) in zip(got, want, strict=True):
        assert abs(gs - ws) <= START_TOL and (gch, gsf) == (wch, wsf)


@pytest.mark.slow
def test_cli_live_gateway_with_a_model(gateway_stream, tmp_path, capsys):
    """The channels come at the model's rate (no decimation from 1 MS/s): SF7 packets are decided by the
    model, the SFs it was not trained for are 'unsupported'."""
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, simulate_preamble_set

    ps = simulate_preamble_set(make_fleet(3, seed=0), CFG, 24, session=Session(),
                               rng=np.random.default_rng(3), snr_db=(20.0, 30.0))
    model = tmp_path / "m"
    train(ps.preambles, ps.device_ids, CFG, model, TrainConfig(epochs=1, batch_size=16, seed=0))
    iq, events = gateway_stream
    path = tmp_path / "gw.cf32"
    iq.tofile(path)
    capsys.readouterr()
    assert main(["live", "--source", f"file:{path}", "--format", "cf32", "-s", "1M", "-f", "868.3M",
                 "--channels", "868.1M,868.3M,868.5M", "--sf", "7-9", "--model", str(model), "--json",
                 "--no-view"]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"verdict"' in line]
    assert len(decisions) == len(events)
    assert {d["verdict"] for d in decisions if d["sf"] != 7} == {UNSUPPORTED_VERDICT}
    sf7 = [d for d in decisions if d["sf"] == 7]
    assert sf7 and all(d["verdict"] in ("accept", "unknown") and d["device"] is not None for d in sf7)


@pytest.mark.parametrize("sf", [7, 12])
def test_collision_flags_ignore_a_lone_packet_off_its_bin_and_catch_a_second_one(sf):
    """A lone packet whose dechirped tone sits 1.5 bins off bin 0 (residual timing/CFO, chirp nonlinearity at
    high SFs) is not a collision; the same window with a second packet 6 dB weaker at another bin and
    another timing is."""
    from lorarffi.dsp.chirp import upchirp
    from lorarffi.dsp.collision import collision_flags

    cfg = LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=250e3, preamble_symbols=8)
    n = np.arange(8 * cfg.samples_per_symbol)
    lone = np.tile(upchirp(cfg), 8) * np.exp(2j * np.pi * 1.5 * n / cfg.samples_per_symbol)
    rng = np.random.default_rng(0)
    noise = 0.05 * (rng.standard_normal(n.size) + 1j * rng.standard_normal(n.size))
    other = 0.5 * np.roll(np.tile(upchirp(cfg, cfg.n_chips // 3), 8), 77)
    flags = collision_flags(np.stack([lone + noise, lone + other + noise]).astype(np.complex64), cfg)
    assert flags.tolist() == [False, True]


def test_cli_live_gateway_with_a_model_per_spreading_factor(gateway_stream, tmp_path, capsys):
    """Two --model (SF7 trained on devices 1-3, SF8 on devices 3-5): each packet goes to the model of its SF,
    SF9 packets are 'unsupported'; with a --registry per model, to that registry; models that clash, SFs left
    out, or registries not paired with the models are refused in one line."""
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, simulate_preamble_set

    fleet = make_fleet(5, seed=0)
    models = {}
    for sf, devices in ((7, fleet[:3]), (8, fleet[2:])):
        cfg = CFG.replace(sf=sf)
        ps = simulate_preamble_set(devices, cfg, 16, session=Session(), rng=np.random.default_rng(sf),
                                   snr_db=(20.0, 30.0))
        models[sf] = tmp_path / f"sf{sf}"
        train(ps.preambles, ps.device_ids, cfg, models[sf], TrainConfig(epochs=1, batch_size=16, seed=0))
    iq, events = gateway_stream
    path = tmp_path / "gw.cf32"
    iq.tofile(path)
    live = ["live", "--source", f"file:{path}", "--format", "cf32", "-s", "1M", "-f", "868.3M",
            "--channels", "868.1M,868.3M,868.5M", "--json", "--no-view"]
    capsys.readouterr()
    assert main([*live, "--sf", "7-9", "--model", str(models[7]), "--model", str(models[8])]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"verdict"' in line]
    assert len(decisions) == len(events)
    by_sf = {sf: [d for d in decisions if d["sf"] == sf] for sf in SFS}
    assert by_sf[7] and by_sf[8] and by_sf[9]
    assert {d["verdict"] for d in by_sf[9]} == {UNSUPPORTED_VERDICT}
    for sf, classes in ((7, {1, 2, 3}), (8, {3, 4, 5})):
        assert {d["verdict"] for d in by_sf[sf]} <= {"accept", "unknown"}, by_sf[sf]
        # the CNN's own call names one of the classes of the model of the packet's SF
        assert {d["cnn_device"] for d in by_sf[sf]} <= classes

    # the same with a registry per model (their devices enrolled from each model's normalised penultimate
    # features): each SF's packets are decided against, and audited in, the registry of their SF's model
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.enroll import enroll
    from lorarffi.rffi.registry import Registry

    registries = {}
    for sf, devices in ((7, fleet[:3]), (8, fleet[2:])):
        ps = simulate_preamble_set(devices, CFG.replace(sf=sf), 16, session=Session(),
                                   rng=np.random.default_rng(sf + 10), snr_db=(20.0, 30.0))
        emb = load_embedder(models[sf])
        pre = emb.preprocess(ps.preambles)
        registries[sf] = tmp_path / f"sf{sf}.db"
        with Registry.create(registries[sf], model_fingerprint=emb.fingerprint, embedding_dim=emb.dim) as reg:
            enroll(emb, reg, pre.iq, ps.device_ids, cfo_hz=pre.cfo_hz)
    capsys.readouterr()
    assert main([*live, "--sf", "7-9", "--model", str(models[7]), "--registry", str(registries[7]),
                 "--model", str(models[8]), "--registry", str(registries[8]), "--no-drift-tracking"]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"verdict"' in line]
    assert len(decisions) == len(events)
    for sf, enrolled in ((7, {1, 2, 3}), (8, {3, 4, 5})):
        mine = [d for d in decisions if d["sf"] == sf]
        assert mine and {d["verdict"] for d in mine} <= {"accept", "rogue"}
        assert {d["device"] for d in mine if d["verdict"] == "accept"} <= enrolled
        with Registry.open(registries[sf]) as reg:
            assert sorted(r.start_sample for r in reg.audit()) == sorted(d["start"] for d in mine)

    for argv, message in (
        ([*live, "--sf", "7-9", "--model", str(models[7]), "--model", str(models[8]), "--registry",
          str(registries[7])], "once per --model"),
        ([*live, "--sf", "7-9", "--model", str(models[7]), "--model", str(models[7])], "already decides SF7"),
        ([*live, "--sf", "7,9", "--model", str(models[7]), "--model", str(models[8])], "add [8]"),
        ([*live[:-4], "--json", "--no-view", "--model", str(models[7]), "--model", str(models[8])],
         "need a gateway plan"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
