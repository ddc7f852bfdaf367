"""The work queue against a real ``redis-server``: queue URLs and where their password comes from (never
shown), the node sink appending every packet exactly, the length cap's removals counted exactly and logged
by a worker as loss records, and undecodable entries turned into loss records."""

# ruff: noqa: F811 - pytest fixtures imported from other modules are redefined as arguments

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from servers import REDIS_PASSWORD, redis_server, redis_with_password  # noqa: F401 - fixtures

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ConfigError
from lorarffi.live.queue import PASSWORD_ENV, PASSWORD_FILE_ENV, decode_message, parse_queue_url
from lorarffi.live.queue_sink import QueueSink
from lorarffi.live.stages import DetectionOnly
from lorarffi.live.worker import LOST_VERDICT, QueueWorker
from lorarffi.rffi.registry import Registry

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
_names = iter(range(10_000))


def packets(n: int, rng: np.random.Generator, first_start: int = 1000) -> list[Packet]:
    """Packets with random windows (the queue carries them; it does not look at them)."""
    out = []
    for i in range(n):
        iq = (rng.standard_normal(64) + 1j * rng.standard_normal(64)).astype(np.complex64)
        start = first_start + 20_000 * i
        out.append(
            Packet(start=start, fingerprint_start=start + 8, cfo_hz=float(rng.normal(0, 3e3)),
                   snr_db=float(rng.uniform(0, 30)), power_db=-20.0, preamble=iq, preamble_fs_hz=1e6,
                   sync_word=0x12, n_preamble_symbols=8, stop=start + 12_000, start_frac=0.25,
                   cfo_coarse_hz=1.0, fs_hz=1e6, preamble_with_cfo=iq * np.complex64(1j))
        )  # fmt: skip
    return out


def offer(sink: QueueSink, batch: list[Packet]) -> None:
    sink.on_decisions(DetectionOnly().decide(batch), batch)


def entries(client, stream: str) -> list:
    return [decode_message(fields) for _, fields in client.xrange(stream)]


# -- URLs and passwords --------------------------------------------------------------------------------------
def test_queue_urls_and_where_the_password_comes_from(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)
    u = parse_queue_url("redis://10.0.0.5:6380/lora?group=site1&db=2")
    assert (u.host, u.port, u.stream, u.group, u.db, u.tls, u.password) == (
        "10.0.0.5", 6380, "lora", "site1", 2, False, None)  # fmt: skip
    assert str(parse_queue_url("rediss://q.lan/lora")) == "rediss://q.lan:6379/lora"
    secret = parse_queue_url("redis://app:hunter2@q.lan:6379/lora")
    assert secret.password == "hunter2" and "hunter2" not in str(secret) + repr(secret)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert parse_queue_url("redis://q.lan/lora").password == "from-env"
    monkeypatch.delenv(PASSWORD_ENV)
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "pw"))
    assert parse_queue_url("redis://q.lan/lora").password == "from-file"
    for bad, match in [
        ("http://q.lan/lora", "not valid"),
        ("redis://q.lan", "names no stream"),
        ("redis://q.lan/a/b", "names no stream"),
        ("redis://:hunter2@q.lan:99999/lora", "invalid port"),
    ]:
        with pytest.raises(ConfigError, match=match) as exc:
            parse_queue_url(bad)
        assert "hunter2" not in str(exc.value)


# -- the node sink -------------------------------------------------------------------------------------------
def test_the_node_sink_appends_every_packet_exactly_and_never_shows_the_password(
    redis_with_password, monkeypatch, caplog
) -> None:
    import redis

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_ENV, REDIS_PASSWORD)
    stream = f"lora{next(_names)}"
    sent = packets(10, np.random.default_rng(1))
    sink = QueueSink(f"{redis_with_password.url}/{stream}", node_id="n1", cfg=CFG, center_freq_hz=868.1e6)
    offer(sink, sent[:4])
    offer(sink, sent[4:])
    assert sink.drain(10.0)
    counters = sink.counters()
    sink.close(None)
    q = counters["queue"]
    names = ("n_queued", "n_sent", "n_dropped", "n_capped", "n_undelivered")
    assert [q[k] for k in names] == [10, 10, 0, 0, 0]
    client = redis.Redis.from_url(redis_with_password.url, password=REDIS_PASSWORD)
    got = entries(client, stream)
    assert [m.seq for m in got] == list(range(10)) and {m.run for m in got} == {sink.run_id}
    for m, p in zip(got, sent, strict=True):
        assert (m.kind, m.node, m.packet.start) == ("preamble", "n1", p.start)
        assert (m.channel_hz, m.sf, m.bw_hz) == (868.1e6, 7, 125e3)
        assert m.packet.preamble.tobytes() == p.preamble.tobytes() and m.packet.cfo_hz == p.cfo_hz
        assert m.time_unix_s == pytest.approx(sink._t0_unix_s + p.start / 1e6, abs=1e-6)
    assert REDIS_PASSWORD not in json.dumps(counters) + caplog.text + str(sink.url) + repr(sink.url)
    with pytest.raises(redis.AuthenticationError):  # the server really asks for it
        redis.Redis.from_url(redis_with_password.url).ping()


def test_the_length_cap_is_counted_exactly_and_workers_log_each_capped_entry(redis_server, tmp_path) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.config_set("stream-node-max-entries", 4)  # trim in small steps, so MAXLEN ~ 8 bites often
    try:
        stream = f"lora{next(_names)}"
        url = f"{redis_server.url}/{stream}"
        sink = QueueSink(url, node_id="n1", cfg=CFG, maxlen=8, batch_size=5)
        sent = packets(40, np.random.default_rng(2))
        for i in range(0, 40, 5):
            offer(sink, sent[i : i + 5])
            assert sink.drain(10.0)
        sink.close(None)
        info = client.xinfo_stream(stream)
        assert sink.n_capped > 0
        assert sink.n_capped == info["entries-added"] - info["length"]  # every removal counted, exactly
        left = entries(client, stream)
        n_left = sum(m.kind == "preamble" for m in left)
        assert max(m.n_lost for m in left if m.kind == "loss") == sink.n_capped  # the last report survives
    finally:
        client.config_set("stream-node-max-entries", 100)
    with Registry.create(tmp_path / "r.db", model_fingerprint="sha256:0", embedding_dim=4) as reg:
        worker = QueueWorker(url, DetectionOnly(), registry=reg, consumer="w", poll_s=0.1)
        summary = worker.run(idle_exit_s=0.5)
        rows = reg.audit()
    lost = [r for r in rows if r.verdict == LOST_VERDICT]
    assert len(lost) == sink.n_capped == summary.n_lost  # one loss record per removed entry, each once
    assert len({r.packet_key for r in lost}) == len(lost)
    assert summary.n_decisions == n_left and n_left + sink.n_capped >= 40
    assert client.xlen(stream) == 0  # decided entries are deleted


def test_an_undecodable_entry_becomes_a_loss_record(redis_server, tmp_path) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    stream = f"lora{next(_names)}"
    bad = client.xadd(stream, {"v": "99", "kind": "preamble"}).decode()
    with Registry.create(tmp_path / "r.db", model_fingerprint="sha256:0", embedding_dim=4) as reg:
        summary = QueueWorker(f"{redis_server.url}/{stream}", DetectionOnly(), registry=reg, poll_s=0.1).run(
            idle_exit_s=0.3
        )
        rows = reg.audit()
    assert [(r.verdict, r.packet_key, r.source) for r in rows] == [(LOST_VERDICT, f"{stream}/{bad}", "queue")]
    assert (summary.n_lost, summary.n_entries, client.xlen(stream)) == (1, 1, 0)


class _Refusing:
    """A stage that cannot decide these packets (as a model needing the window as received refuses
    packets queued without it)."""

    source = ""

    def decide(self, packets):
        raise ConfigError("packets were made without preamble_with_cfo")


def test_packets_the_stage_refuses_become_loss_records(redis_server, tmp_path) -> None:
    url = f"{redis_server.url}/lora{next(_names)}"
    sink = QueueSink(url, node_id="n1", cfg=CFG)
    sent = packets(3, np.random.default_rng(3))
    offer(sink, sent)
    assert sink.drain(10.0)
    sink.close(None)
    with Registry.create(tmp_path / "r.db", model_fingerprint="sha256:0", embedding_dim=4) as reg:
        summary = QueueWorker(url, _Refusing(), registry=reg, poll_s=0.1).run(idle_exit_s=0.3)
        rows = reg.audit()
    assert [(r.verdict, r.packet_key) for r in rows] == [
        (LOST_VERDICT, f"n1/{sink.run_id}/{p.start}") for p in sent
    ]
    assert (summary.n_lost, summary.n_decisions, summary.n_entries) == (3, 0, 3)
