"""Loss accounting in the live summary: whether every lost sample could be counted, per ZeroMQ mode.

Raw PUB/SUB carries no sequence numbers, so a message the publisher never delivered leaves no trace: the
summary says loss accounting is not observable (``loss_observable: false`` with a reason), also when
nothing was seen missing. Tagged messages (pass_tags offsets) and PUSH/PULL (the sender waits instead of
dropping) count every loss: ``loss_observable: true``. Truth: a publisher written here (gr-zeromq wire
format, ``support.gr_message``) that skips known messages, as a PUB sink at its high-water mark does.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from support import gr_message

zmq = pytest.importorskip("zmq")

from test_capture_zmq import GrPublisher  # noqa: E402

from lorarffi.capture.sources import open_source  # noqa: E402
from lorarffi.capture.zmq_source import ZmqSource  # noqa: E402
from lorarffi.cli import main  # noqa: E402
from lorarffi.dsp.config import LoRaConfig  # noqa: E402
from lorarffi.live.pipeline import LivePipeline  # noqa: E402
from lorarffi.live.sinks import Sink  # noqa: E402

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
IDLE_S = 1.0  # the stream ends this long after its last message
MSG = 5000  # samples per message
N_MSG = 12
SKIPPED = (3, 7)  # messages the "publisher" drops: 2 x 5000 samples never arrive


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    rng = np.random.default_rng(11)
    n = MSG * N_MSG
    return (0.01 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


class Progress(Sink):
    """Keeps the pipeline's progress statuses (what the console view shows)."""

    def __init__(self) -> None:
        self.statuses: list[dict] = []

    def on_progress(self, status) -> None:
        self.statuses.append(status)


def run_zmq(noise, *, pattern: str, tagged, skip=SKIPPED, extra: list[bytes] = (), progress=None):
    """Publish ``noise`` in messages of MSG samples (with offsets when ``tagged``; ``tagged="mixed"``: every
    other one), leaving out the ``skip`` ones and appending ``extra`` raw messages; run the pipeline (progress
    reported after every chunk to ``progress``)."""
    pub = GrPublisher("pub" if pattern == "sub" else "push")
    src = ZmqSource(pub.endpoint, fs_hz=1e6, pattern=pattern, idle_timeout_s=IDLE_S)
    try:
        src._start()
        pub.wait_subscriber()
        for i in range(N_MSG):
            if i in skip:
                continue
            with_offset = tagged is True or (tagged == "mixed" and i % 2 == 0)
            iq = noise[i * MSG : (i + 1) * MSG]
            pub.send([gr_message(iq, offset=i * MSG if with_offset else None)])
        for frame in extra:
            pub.send([frame])
        sinks = [] if progress is None else [progress]
        summary = LivePipeline(src, CFG, sinks=sinks, progress_period_s=0.0).run()
    finally:
        src.close()
        pub.close()
    return summary


def test_raw_pub_sub_says_its_losses_are_not_observable(noise) -> None:
    progress = Progress()
    summary = run_zmq(noise, pattern="sub", tagged=False, progress=progress)
    # two messages never arrived, and nothing on the wire shows it: the counters cannot see the loss ...
    assert summary.n_samples == MSG * (N_MSG - len(SKIPPED))
    assert summary.source_stats.n_lost_samples == 0
    # ... and the summary says so instead of implying nothing was lost
    d = summary.to_dict()
    assert d["loss_observable"] is False and "raw PUB/SUB" in d["loss_reason"]
    assert "pass_tags" in d["loss_reason"] and "zmq+pull" in d["loss_reason"]
    assert json.loads(summary.to_json())["summary"]["loss_observable"] is False
    lines = summary.format().splitlines()
    assert lines[2].startswith("dropped samples: 0 in 0 gap(s)")  # the line that cannot see the loss ...
    assert lines[3] == f"loss accounting: not observable: {d['loss_reason']}"  # ... and the one that says so
    assert progress.statuses and all(st["loss_observable"] is False for st in progress.statuses)


def test_tagged_pub_sub_counts_every_lost_sample(noise) -> None:
    progress = Progress()
    summary = run_zmq(noise, pattern="sub", tagged=True, progress=progress)
    assert summary.source_stats.n_lost_samples == MSG * len(SKIPPED)
    assert summary.source_stats.n_gaps == len(SKIPPED)
    d = summary.to_dict()
    assert d["loss_observable"] is True and d["loss_reason"] is None
    assert not any(line.startswith("loss accounting") for line in summary.format().splitlines())
    assert progress.statuses and all(st["loss_observable"] is True for st in progress.statuses)


def test_a_pub_sub_stream_with_some_untagged_messages_is_not_observable(noise) -> None:
    summary = run_zmq(noise, pattern="sub", tagged="mixed", skip=())
    assert summary.loss_observable is False and "raw PUB/SUB" in summary.loss_reason


@pytest.mark.parametrize("tagged", [False, True], ids=["raw", "tagged"])
def test_push_pull_counts_every_loss(noise, tagged) -> None:
    summary = run_zmq(noise, pattern="pull", tagged=tagged, skip=())
    assert summary.n_samples == MSG * N_MSG and summary.source_stats.n_lost_samples == 0
    assert summary.to_dict()["loss_observable"] is True and summary.loss_reason is None


def test_malformed_messages_in_a_raw_stream_make_losses_unobservable(noise) -> None:
    summary = run_zmq(noise, pattern="pull", tagged=False, skip=(), extra=[b"\x00" * 13])
    assert summary.source_stats.n_bad_frames == 1
    assert summary.loss_observable is False and "1 malformed message(s)" in summary.loss_reason


def test_a_publisher_restarting_its_offsets_makes_losses_unobservable(noise) -> None:
    pub = GrPublisher("push")
    src = ZmqSource(pub.endpoint, fs_hz=1e6, pattern="pull", idle_timeout_s=IDLE_S)
    try:
        src._start()
        pub.send([gr_message(noise[:MSG], offset=50_000)])
        pub.send([gr_message(noise[MSG : 2 * MSG], offset=0)])  # went backwards: a gap of unknown size
        summary = LivePipeline(src, CFG).run()
    finally:
        src.close()
        pub.close()
    assert summary.source_stats.n_untimed_overflows == 1
    assert summary.loss_observable is False
    assert summary.loss_reason == "1 overflow(s) of unknown size: the samples lost in them are not counted"


def test_pub_sub_that_received_nothing_is_not_observable() -> None:
    src = ZmqSource("tcp://127.0.0.1:1", fs_hz=1e6, pass_tags=True)
    try:
        assert "no tagged message" in src.loss_unobservable_reason()
    finally:
        src.close()


def test_a_file_source_is_observable(sim_stream) -> None:
    summary = LivePipeline(open_source(f"file:{sim_stream.path}", format="cf32", fs_hz=1e6), CFG).run()
    assert summary.to_dict()["loss_observable"] is True and summary.loss_reason is None


def test_progress_status_and_console_view_show_unobservable_losses() -> None:
    from rich.console import Console

    from lorarffi.live.console import ConsoleSink

    for observable in (True, False):
        buf = io.StringIO()
        view = ConsoleSink("t", console=Console(file=buf, width=140, force_terminal=False), refresh_hz=1e6)
        view.on_progress({"n_lost_samples": 0, "n_overflows": 0, "loss_observable": observable})
        view.close()
        assert ("more may be lost unseen" in buf.getvalue()) is (not observable)


@pytest.mark.parametrize("output", ["--json", "--no-view"])
def test_live_command_reports_raw_pub_sub_losses_as_not_observable(noise, output, capsys) -> None:
    pub = GrPublisher("pub")

    def send() -> None:
        pub.wait_subscriber()
        for i in range(N_MSG):
            pub.send([gr_message(noise[i * MSG : (i + 1) * MSG])])

    sender = threading.Thread(target=send)
    sender.start()
    args = ["live", "--source", f"zmq:{pub.endpoint}", "--fs-hz", "1M", "--duration-s", "0.04"]  # of 0.06 s
    try:
        rc = main([*args, output])
    finally:
        sender.join(20)
        pub.close()
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    if output == "--json":
        summary = json.loads(out[-1])["summary"]
        assert summary["loss_observable"] is False and "raw PUB/SUB" in summary["loss_reason"]
    else:
        assert any(line.startswith("loss accounting: not observable: raw PUB/SUB") for line in out)
