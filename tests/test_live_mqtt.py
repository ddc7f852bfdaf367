"""MQTT publication of live decisions and alerts, against a real broker; alerts on the ZeroMQ publisher.

Each test starts Debian's ``mosquitto`` itself on 127.0.0.1 on a free port with a config in a temporary
folder, and stops it after. The broker keeps its sessions on disk across a restart (``persistence true``),
and the subscriber here holds a persistent session (``clean_session=False``, QoS 1): what is published
while it is reconnecting waits for it at the broker, so "every message arrives" depends on the publisher
alone, not on which client reconnects first. QoS 1 is at-least-once: a message in flight when the broker
stopped may come twice, so arrivals are compared as sets of ``seq`` plus the payload of each.

mosquitto missing is a failure, not a skip: ``make install`` installs it (the Makefile's APT_PACKAGES).
"""

from __future__ import annotations

import getpass
import json
import math
import pathlib
import shutil
import socket
import subprocess
import threading
import time
import types

import numpy as np
import pytest
from test_live import Collect
from test_live_model import model_dir  # noqa: F401 - the tiny trained model, a module fixture

from lorarffi.capture.sources import open_source
from lorarffi.cli import main
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ConfigError
from lorarffi.live.decision import ALERT_VERDICTS, DecisionRecord
from lorarffi.live.mqtt_sink import MQTT_SCHEMA_VERSION, MqttSink, mqtt_payload, parse_mqtt_url
from lorarffi.live.pipeline import LivePipeline
from lorarffi.live.sinks import Sink, ZmqPublishSink

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
WAIT_S = 20.0  # longest wait for messages to arrive (they take milliseconds; this only bounds a failure)
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "drain_timeout_s": WAIT_S}


# -- a real broker -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    """The mosquitto binary (Debian installs it in /usr/sbin, which a normal user's PATH may lack)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(
            "mosquitto (the MQTT broker these tests run) is not installed: run `make install` "
            "(it apt-get installs the Makefile's APT_PACKAGES, mosquitto among them)",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:``port``, sessions persisted in ``folder`` across :meth:`stop`/:meth:`start`."""

    def __init__(self, binary: str, folder: pathlib.Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "log_dest stderr\n"
            f"user {getpass.getuser()}\n"  # root keeps root: the folder is not the mosquitto user's
        )
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}/lorarffi"

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"mosquitto did not listen:\n{self.log.read_text()}"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: saves the sessions, then exits
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(mosquitto_bin, tmp_path):
    b = Broker(mosquitto_bin, tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A paho client with a persistent session subscribed to ``lorarffi/#`` at QoS 1; keeps every message."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}", clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("lorarffi/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, topic: str, seqs: set[int]) -> dict[int, dict]:
        """Wait until every ``seq`` in ``seqs`` arrived on ``topic``; returns the payloads by seq."""
        with self._cond:
            self._cond.wait_for(lambda: seqs <= {m["seq"] for t, m in self.messages if t == topic}, WAIT_S)
            return {m["seq"]: m for t, m in self.messages if t == topic}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker):
    s = Subscriber(broker.port)
    yield s
    s.close()


@pytest.fixture
def make_sink():
    """``make_sink(url, **options)``: an :class:`MqttSink` with fast reconnection, closed after the test."""
    sinks = []

    def make(url: str, **options) -> MqttSink:
        sinks.append(MqttSink(url, **{**FAST, **options}))
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.close()


# -- records -------------------------------------------------------------------------------------------------
def record(i: int, verdict: str = "accept") -> DecisionRecord:
    """A decision about a made-up packet at stream index 10,000 * (i + 1)."""
    p = Packet(
        start=10_000 * (i + 1),
        fingerprint_start=10_000 * (i + 1),
        cfo_hz=100.0 + i,
        snr_db=20.0,
        power_db=-10.0,
        preamble=np.ones(CFG.preamble_samples, np.complex64),
        preamble_fs_hz=1e6,
        sync_word=0x12,
        n_preamble_symbols=8,
        stop=10_000 * (i + 1) + 12_544,
        fs_hz=1e6,
    )
    device = -1 if verdict in ("unknown", "rogue") else i % 3
    return DecisionRecord.for_packet(p, device=device, verdict=verdict, confidence=0.5).timed(1.25)


def batch(first: int, n: int) -> list[DecisionRecord]:
    """Records ``first`` .. ``first + n - 1``; every third one is a rogue."""
    return [record(i, "rogue" if i % 3 == 2 else "accept") for i in range(first, first + n)]


def decision_json(rec: DecisionRecord) -> dict:
    return json.loads(rec.to_json())


def check_arrivals(sub: Subscriber, records: list[DecisionRecord]) -> None:
    """Every record arrived on lorarffi/decision with seq = its position, every rogue on lorarffi/alert
    with seq = its position among the rogues; payloads are the records' JSON."""
    got = sub.wait_for("lorarffi/decision", set(range(len(records))))
    assert set(got) == set(range(len(records)))
    assert [got[i]["decision"] for i in range(len(records))] == [decision_json(r) for r in records]
    rogues = [r for r in records if r.verdict == "rogue"]
    alerts = sub.wait_for("lorarffi/alert", set(range(len(rogues))))
    assert set(alerts) == set(range(len(rogues)))
    assert [alerts[i]["decision"] for i in range(len(rogues))] == [decision_json(r) for r in rogues]
    assert all(m["kind"] == "alert" for m in alerts.values())


# -- URL, payload, alert predicate ---------------------------------------------------------------------------
def test_mqtt_urls_are_parsed_and_bad_ones_refused_with_the_reason() -> None:
    u = parse_mqtt_url("mqtt://127.0.0.1:1884/site/gw1")
    assert (u.host, u.port, u.prefix) == ("127.0.0.1", 1884, "site/gw1")
    assert (u.topic("decision"), u.topic("alert")) == ("site/gw1/decision", "site/gw1/alert")
    assert str(parse_mqtt_url("mqtt://broker.lan")) == "mqtt://broker.lan:1883/lorarffi"
    assert str(parse_mqtt_url("mqtt://[::1]:1/x/")) == "mqtt://[::1]:1/x"
    for bad, why in (
        ("tcp://h:1/x", "not valid"),
        ("mqtts://h/x", "TLS"),
        ("mqtt://u:p@h/x", "credentials"),
        ("mqtt://h:99999/x", "port"),
        ("mqtt:///x", "no host"),
        ("mqtt://h/a/+/b", "prefix"),
        ("mqtt://h/a#", "wildcard"),
        ("mqtt://h/a//b", "prefix"),
        ("mqtt://h/x?q=1", "query"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_mqtt_url(bad)


def test_payload_schema_is_the_documented_one() -> None:
    rec = record(0, "rogue")
    # 2025-01-31T12:00:00.123Z: 1738324800 s after the epoch, and 0.123 s
    payload = mqtt_payload(rec, kind="alert", seq=7, run="ab" * 16, source="sim", published_s=1738324800.123)
    body = json.loads(payload)
    assert list(body) == ["schema_version", "kind", "run", "seq", "source", "published_utc", "decision"]
    assert body["schema_version"] == MQTT_SCHEMA_VERSION == 1
    assert (body["kind"], body["run"], body["seq"], body["source"]) == ("alert", "ab" * 16, 7, "sim")
    assert body["published_utc"] == "2025-01-31T12:00:00.123Z"
    assert body["decision"] == decision_json(rec)
    assert body["decision"]["verdict"] == "rogue" and body["decision"]["start"] == 10_000
    untimed = record(1).timed(math.nan)  # NaN latency: null in JSON, as in the JSONL line
    body = json.loads(mqtt_payload(untimed, kind="decision", seq=0, run="r", source=None, published_s=0.0))
    assert body["decision"]["latency_ms"] is None and body["published_utc"] == "1970-01-01T00:00:00.000Z"
    with pytest.raises(ConfigError, match="kind"):
        mqtt_payload(rec, kind="status", seq=0, run="r", source=None, published_s=0.0)


def test_only_rogue_verdicts_are_alerts() -> None:
    assert ALERT_VERDICTS == {"rogue"}
    assert record(0, "rogue").is_alert
    assert not any(record(0, v).is_alert for v in ("accept", "unknown", "detected"))


# -- against the broker --------------------------------------------------------------------------------------
def test_every_decision_and_alert_arrives_with_qos_1(broker, subscriber, make_sink) -> None:
    records = batch(0, 30)
    sink = make_sink(broker.url, source="test")
    sink.on_decisions(records[:10], [])
    sink.on_decisions(records[10:], [])
    check_arrivals(subscriber, records)
    assert sink.drain(WAIT_S)
    c = sink.counters()["mqtt"]
    assert c == {
        "broker": broker.url,
        "n_decisions": 30,
        "n_alerts": 10,
        "n_delivered": 40,
        "n_dropped": 0,
        "n_dropped_alerts": 0,
        "n_undelivered": 0,
        "n_disconnects": 0,
    }
    got = subscriber.wait_for("lorarffi/decision", set())
    assert {m["run"] for m in got.values()} == {sink.run_id}
    assert {m["source"] for m in got.values()} == {"test"}
    assert all(m["schema_version"] == MQTT_SCHEMA_VERSION for m in got.values())


def test_decisions_published_while_the_broker_restarts_are_queued_and_all_arrive(
    broker, subscriber, make_sink
) -> None:
    records = batch(0, 45)
    sink = make_sink(broker.url)
    sink.on_decisions(records[:15], [])
    assert sink.drain(WAIT_S)
    broker.stop()
    deadline = time.monotonic() + WAIT_S
    while sink.n_disconnects == 0:  # the client noticed
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sink.on_decisions(records[15:30], [])  # the broker is down: these wait in the queue
    assert sink.n_pending == 15 + 5  # 15 decisions, 5 of them rogue
    assert not sink.drain(0.3)
    broker.start()  # the same port
    sink.on_decisions(records[30:], [])
    check_arrivals(subscriber, records)
    assert sink.drain(WAIT_S)
    c = sink.counters()["mqtt"]
    assert (c["n_decisions"], c["n_alerts"], c["n_delivered"]) == (45, 15, 60)
    assert (c["n_dropped"], c["n_undelivered"], c["n_disconnects"]) == (0, 0, 1)


def test_queue_overflow_drops_are_counted_and_the_kept_messages_arrive(broker, subscriber, make_sink) -> None:
    broker.stop()  # the subscriber's session stays at the broker (persisted)
    records = [record(i) for i in range(12)]  # no rogues: 12 messages
    sink = make_sink(broker.url, queue_size=5)
    sink.on_decisions(records, [])
    assert sink.n_dropped == {"decision": 7, "alert": 0}  # the queue holds 5: the 7 newer are refused
    broker.start()
    got = subscriber.wait_for("lorarffi/decision", set(range(5)))
    assert sink.drain(WAIT_S)
    assert set(got) == set(range(5))  # seq 5..11 never sent: the gap shows subscribers the drops
    assert [got[i]["decision"] for i in range(5)] == [decision_json(r) for r in records[:5]]
    c = sink.counters()["mqtt"]
    assert (c["n_decisions"], c["n_delivered"], c["n_dropped"], c["n_undelivered"]) == (12, 5, 7, 0)


def test_the_run_summary_reports_drops_and_undelivered_messages(mosquitto_bin, tmp_path, sim_stream) -> None:
    broker = Broker(mosquitto_bin, tmp_path)  # never started: nothing listens on the port
    sink = MqttSink(broker.url, queue_size=4, reconnect_min_s=0.1, reconnect_max_s=0.2, drain_timeout_s=0.3)
    src = open_source(f"file:{sim_stream.path}", format="cf32", fs_hz=1e6)
    summary = LivePipeline(src, CFG, sinks=[sink]).run()
    n = summary.n_packets
    assert n > 4
    c = summary.to_dict()["sinks"]["mqtt"]
    assert (c["n_decisions"], c["n_delivered"], c["n_dropped"], c["n_undelivered"]) == (n, 0, n - 4, 4)
    assert f"n_dropped {n - 4}, n_dropped_alerts 0, n_undelivered 4" in summary.format()
    assert json.loads(summary.to_json())["summary"]["sinks"]["mqtt"]["n_dropped"] == n - 4


class Alternating:
    """A decision stage calling every other packet a rogue (the verdict a registry stage gives)."""

    def __init__(self) -> None:
        self.n = 0

    def decide(self, packets):
        out = []
        for p in packets:
            rogue = self.n % 2 == 1
            verdict = "rogue" if rogue else "accept"
            out.append(DecisionRecord.for_packet(p, device=-1 if rogue else 0, verdict=verdict))
            self.n += 1
        return out


def test_pipeline_decisions_and_alerts_reach_the_broker(broker, subscriber, sim_stream) -> None:
    collect = Collect()
    sink = MqttSink(broker.url, **FAST)
    src = open_source(f"file:{sim_stream.path}", format="cf32", fs_hz=1e6)
    summary = LivePipeline(src, CFG, decider=Alternating(), sinks=[collect, sink]).run()
    assert summary.n_packets == len(collect.records) >= 8
    assert summary.verdicts["rogue"] == summary.n_packets // 2
    check_arrivals(subscriber, collect.records)
    c = summary.sinks["mqtt"]
    assert (c["n_decisions"], c["n_alerts"]) == (summary.n_packets, summary.n_packets // 2)
    assert c["n_delivered"] == c["n_decisions"] + c["n_alerts"] and c["n_undelivered"] == 0


class Queued(Sink):
    """A network sink stand-in: its counters say whether it was drained before the summary was made."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def drain(self) -> None:
        self.calls.append("drain")

    def counters(self):
        return {"queued": {"drained": "drain" in self.calls}}

    def close(self, summary=None) -> None:
        self.calls.append("close")


def test_the_pipeline_drains_sinks_before_the_summary_and_reports_their_counters(sim_stream) -> None:
    sink = Queued()
    src = open_source(f"file:{sim_stream.path}", format="cf32", fs_hz=1e6)
    calls = ("on_samples", "on_decisions", "on_progress", "close")
    plain = types.SimpleNamespace(**{name: lambda *args: None for name in calls})  # no drain, no counters
    summary = LivePipeline(src, CFG, sinks=[sink, plain]).run()
    assert sink.calls == ["drain", "close"]
    assert summary.sinks == {"queued": {"drained": True}}
    assert summary.format().splitlines()[-1] == "queued: drained True"


@pytest.mark.slow
def test_live_command_publishes_every_decision_to_the_broker(
    broker, subscriber, model_dir, tmp_path, capsys  # noqa: F811 - the imported fixture
) -> None:
    jsonl = tmp_path / "decisions.jsonl"
    sim = ["--source", "sim", "--devices", "3", "--fleet-seed", "0", "--seed", "3", "--speed", "0"]
    out = ["--mqtt", broker.url, "--jsonl", str(jsonl), "--json"]
    argv = ["live", *sim, "--duration-s", "2", "--model", str(model_dir), *out]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert written[0]["type"] == "run"  # the run's marker line, then the decisions
    written = written[1:]
    n = summary["n_packets"]
    assert n == len(written) >= 3
    got = subscriber.wait_for("lorarffi/decision", set(range(n)))
    assert [got[i]["decision"] for i in range(n)] == written  # the JSONL lines, in order
    assert {m["source"] for m in got.values()} == {"sim"}
    assert summary["sinks"]["mqtt"] == {
        "broker": broker.url,
        "n_decisions": n,
        "n_alerts": 0,  # the closed-set model says accept or unknown, never rogue
        "n_delivered": n,
        "n_dropped": 0,
        "n_dropped_alerts": 0,
        "n_undelivered": 0,
        "n_disconnects": 0,
    }


# -- ZeroMQ --------------------------------------------------------------------------------------------------
def test_zmq_publisher_sends_alerts_under_the_alert_topic() -> None:
    import zmq

    pub = ZmqPublishSink("tcp://127.0.0.1:0")
    ctx = zmq.Context.instance()
    everything, alerts = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    everything.setsockopt(zmq.SUBSCRIBE, b"")
    alerts.setsockopt(zmq.SUBSCRIBE, b"alert")
    for s in (everything, alerts):
        s.connect(pub.endpoint)
    probe = [record(99, "rogue")]
    deadline = time.monotonic() + 10
    while not (everything.poll(50) and alerts.poll(50)):  # PUB drops until both subscriptions arrived
        pub.on_decisions(probe, [])
        assert time.monotonic() < deadline
    for s in (everything, alerts):
        while s.poll(100):
            s.recv_multipart()
    records = batch(0, 9)
    pub.on_decisions(records, [])
    got_all = [everything.recv_multipart() for _ in range(9 + 3)]
    got_alerts = [alerts.recv_multipart() for _ in range(3)]
    assert not alerts.poll(200)
    everything.close()
    alerts.close()
    pub.close()
    expected_all = []
    for r in records:  # a decision is one frame; its alert follows as (b"alert", the same JSON)
        expected_all.append([r.to_json().encode()])
        if r.verdict == "rogue":
            expected_all.append([b"alert", r.to_json().encode()])
    assert got_all == expected_all
    assert got_alerts == [[b"alert", r.to_json().encode()] for r in records if r.verdict == "rogue"]
    assert pub.n_alerts >= 3
