"""Console views of a live run: a rich live panel on stderr (:class:`ConsoleSink`) or one text line per
decision on stdout (:class:`TextSink`).

Both show the pipeline's own counts (sent with each progress status) and the records' device labels, so a
decision is named and counted the same way here, in the summary and in the recordings. Alerts
(:attr:`~lorarffi.live.decision.DecisionRecord.is_alert`: a registry stage's ``rogue``) are highlighted in
both.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

from lorarffi.live.decision import DecisionRecord
from lorarffi.live.sinks import Sink
from lorarffi.live.summary import LiveSummary

__all__ = ["ConsoleSink", "TextSink"]


class ConsoleSink(Sink):
    """A live console view (rich): sample rate, packets per verdict, drops, latency, a per-device table
    (packets, last seen) and the latest alerts, highlighted.

    Refreshed at most ``refresh_hz`` times a second on stderr, so stdout stays free for results. Counts come
    from the pipeline's progress status; latencies are those of the last 1000 decisions; "last seen" is the
    stream time (s) of a device label's latest packet; the alerts panel lists the last ``n_alerts_shown``
    alerts (their total is counted), and the device rows of alerting labels (``rogue``) are drawn in red.

    Parameters
    ----------
    title : str
    refresh_hz : float
    console : rich.console.Console, optional
        Where to draw (default: stderr).
    clock : callable
        Monotonic clock (tests pass a fake one).
    n_alerts_shown : int
        Alerts listed in the alerts panel.
    """

    def __init__(
        self,
        title: str = "lora-rffi live",
        *,
        refresh_hz: float = 4.0,
        console: Any = None,
        clock: Callable[[], float] = time.monotonic,
        n_alerts_shown: int = 5,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self._console = console or Console(stderr=True)
        self._clock = clock
        self._period_s = 1.0 / refresh_hz
        self._last = -math.inf
        self._status: dict[str, Any] = {}
        self._latencies: list[float] = []
        self._last_seen_s: dict[str, float] = {}
        self._alerting: set[str] = set()
        self._alerts: deque[DecisionRecord] = deque(maxlen=n_alerts_shown)
        self.n_alerts = 0
        self._live = Live(self.render(), console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        self._latencies += [rec.latency_ms for rec in records if not math.isnan(rec.latency_ms)]
        self._latencies = self._latencies[-1000:]
        for rec in records:
            self._last_seen_s[rec.device_label] = rec.time_s
            if rec.is_alert:
                self._alerts.append(rec)
                self._alerting.add(rec.device_label)
                self.n_alerts += 1

    def on_progress(self, status: dict[str, Any]) -> None:
        self._status = status
        now = self._clock()
        if now - self._last >= self._period_s:
            self._last = now
            self._live.update(self.render(), refresh=True)

    def render(self) -> Any:
        """The current view as a rich renderable."""
        from rich.console import Group
        from rich.table import Table

        s = self._status
        verdicts: dict[str, int] = s.get("verdicts", {})
        devices: dict[str, int] = s.get("devices", {})
        head = Table.grid(padding=(0, 2))
        head.add_column(justify="right")
        head.add_column()
        rate = s.get("rate_sps")
        head.add_row("source", str(s.get("source", "")))
        head.add_row(
            "sample rate",
            "" if rate is None else f"{rate / 1e6:.2f} MS/s ({s.get('realtime_factor', 0):.1f}x real time)",
        )
        head.add_row("samples", f"{s.get('n_samples', 0):,}")
        unseen = "" if s.get("loss_observable", True) else "  (more may be lost unseen: see the summary)"
        head.add_row(
            "dropped samples",
            f"{s.get('n_lost_samples', 0):,} in {s.get('n_overflows', 0)} overflows{unseen}",
        )
        head.add_row(
            "packets",
            f"{sum(verdicts.values()):,}  " + "  ".join(f"{v} {n:,}" for v, n in sorted(verdicts.items())),
        )
        if self._latencies:
            lat = np.asarray(self._latencies)
            head.add_row(
                "latency", f"p50 {np.percentile(lat, 50):.1f} ms  p99 {np.percentile(lat, 99):.1f} ms"
            )
        if self.n_alerts:
            head.add_row("alerts", f"[bold red]{self.n_alerts:,}[/]")
        table = Table(title=self.title, show_lines=False)
        table.add_column("device")
        table.add_column("packets", justify="right")
        table.add_column("last seen", justify="right")
        for dev, n in sorted(devices.items(), key=lambda kv: (-kv[1], kv[0])):
            seen = self._last_seen_s.get(dev)
            table.add_row(
                dev,
                f"{n:,}",
                "" if seen is None else f"{seen:.2f} s",
                style="bold red" if dev in self._alerting else None,
            )
        parts: list[Any] = [head, table]
        if self._alerts:
            alerts = Table(title=f"latest alerts ({self.n_alerts:,} in all)", title_style="bold red")
            for name in ("t", "verdict", "start", "cfo", "snr", "score"):
                alerts.add_column(name, justify="left" if name == "verdict" else "right")
            for r in reversed(self._alerts):
                alerts.add_row(
                    f"{r.time_s:.3f} s",
                    r.verdict,
                    f"{r.start:,}",
                    f"{r.cfo_hz:+.1f} Hz",
                    f"{r.snr_db:.1f} dB",
                    "" if r.score is None else f"{r.score:.4f}",
                    style="bold red",
                )
            parts.append(alerts)
        return Group(*parts)

    def close(self, summary: LiveSummary | None = None) -> None:
        if summary is not None:  # the final counts, which the last progress status may predate
            self._status = {**self._status, "verdicts": summary.verdicts, "devices": summary.devices}
        self._live.update(self.render(), refresh=True)
        self._live.stop()


class TextSink(Sink):
    """One human-readable line per decision (``t=... start=... verdict device cfo snr latency``).

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default: standard output).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        out = self._stream or sys.stdout
        for r in records:
            who = r.device_label if r.known_device is None else f"device {r.known_device}"
            score = "" if r.score is None else f"  score={r.score:.4f}"
            alert = "  ALERT" if r.is_alert else ""
            out.write(
                f"t={r.time_s:10.4f} s  start={r.start:>11}  {r.verdict:<8} {who:<11} "
                f"cfo={r.cfo_hz:+9.1f} Hz  snr={r.snr_db:5.1f} dB  latency={r.latency_ms:6.1f} ms"
                f"{score}{alert}\n"
            )
            out.flush()
