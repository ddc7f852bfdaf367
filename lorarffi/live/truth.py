"""Ground truth of a simulated live run, and the decisions scored against it.

The simulated radio knows what it transmitted (:attr:`~lorarffi.capture.sim_source.SimSource.events`).
:func:`write_truth` stores it as JSON Lines, one packet each; :func:`score_decisions` matches decision
records (the ``live --jsonl`` lines) to those packets by start sample and counts what an operator cares about:
enrolled devices named correctly, rogues caught, false accepts, packets never decided.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lorarffi.datasets.atomic import write_atomic
from lorarffi.errors import ConfigError

__all__ = ["TruthScore", "read_jsonl", "score_decisions", "truth_records", "write_truth"]

REJECTED = frozenset({"rogue", "unknown"})
"""Verdicts that refuse a packet."""


def truth_records(events: Iterable[Any], n_samples: int | None = None) -> list[dict[str, Any]]:
    """Plain dicts of a simulator's transmission events (start sample, device id, rogue or not, CFO in Hz,
    SNR in dB, length in samples, and ``whole``: the packet ended within the first ``n_samples`` samples the
    run processed; always True when ``n_samples`` is None)."""
    return [
        {
            "start": int(e.start),
            "device": int(e.device_id),
            "is_rogue": bool(e.is_rogue),
            "cfo_hz": float(e.cfo_hz),
            "snr_db": float(e.snr_db),
            "n_samples": int(e.n_samples),
            "whole": n_samples is None or int(e.start) + int(e.n_samples) <= n_samples,
        }
        for e in events
    ]


def write_truth(path: str | os.PathLike[str], source: Any, n_samples: int | None = None) -> pathlib.Path:
    """Write ``source.events`` (a simulated source's ground truth) to ``path`` as JSON Lines.

    ``n_samples``: samples the run processed (the simulator may have made packets that run past them; they
    are written with ``whole: false``). Written to a temporary name beside ``path`` and renamed when complete.
    """
    events = getattr(source, "events", None)
    if events is None:
        raise ConfigError(f"{path}: the source {getattr(source, 'name', source)!r} has no ground truth")
    out = pathlib.Path(path)
    write_atomic(out, "".join(json.dumps(rec) + "\n" for rec in truth_records(events, n_samples)))
    return out


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, one per non-empty line."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class TruthScore:
    """Decisions of a run scored against what was transmitted.

    Packet counts; ``enrolled`` are packets of devices the decider knows (``enrolled_ids``), ``strangers``
    packets of every other sender (rogues and devices never enrolled).
    """

    n_transmitted: int = 0
    """Every packet of the truth file (also those the run ended in)."""
    n_decided: int = 0
    n_missed: int = 0
    n_spurious: int = 0
    enrolled: int = 0
    enrolled_correct: int = 0
    enrolled_wrong_device: int = 0
    enrolled_rejected: int = 0
    strangers: int = 0
    strangers_caught: int = 0
    strangers_accepted: int = 0
    per_sender: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Share of decided packets of enrolled devices given their own id (NaN without any)."""
        return self.enrolled_correct / self.enrolled if self.enrolled else float("nan")

    @property
    def caught_rate(self) -> float:
        """Share of decided stranger packets refused (NaN without any)."""
        return self.strangers_caught / self.strangers if self.strangers else float("nan")

    @property
    def false_accepts(self) -> int:
        """Packets accepted as the wrong device: strangers accepted plus enrolled packets named as another."""
        return self.strangers_accepted + self.enrolled_wrong_device

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "per_sender"}
        d["accuracy"] = None if not self.enrolled else self.accuracy
        d["caught_rate"] = None if not self.strangers else self.caught_rate
        d["false_accepts"] = self.false_accepts
        d["per_sender"] = {str(k): v for k, v in sorted(self.per_sender.items())}
        return d


def score_decisions(
    decisions: Sequence[Mapping[str, Any]],
    truth: Sequence[Mapping[str, Any]],
    enrolled_ids: Iterable[int],
    *,
    tolerance_samples: int,
) -> TruthScore:
    """Match decisions to transmitted packets by start sample and count the outcomes.

    Parameters
    ----------
    decisions : sequence of mapping
        Decision records (``start``, ``device``, ``verdict``), e.g. ``live --jsonl`` lines (lines without a
        ``start``, such as run markers, are skipped).
    truth : sequence of mapping
        :func:`truth_records` of the run.
    enrolled_ids : iterable of int
        Devices the decider knows; every other sender is a stranger.
    tolerance_samples : int
        Largest distance between a decision's ``start`` and a packet's true start to match them (e.g. one
        symbol's samples). Each packet takes at most one decision (the nearest); the rest are spurious.
        A packet not decided counts as missed unless its record says it was not ``whole`` in the run.
    """
    if tolerance_samples < 0:
        raise ConfigError(f"tolerance_samples={tolerance_samples} is not valid: use >= 0")
    known = {int(i) for i in enrolled_ids}
    recs = [d for d in decisions if "start" in d]
    score = TruthScore(n_transmitted=len(truth))
    starts = np.array([int(t["start"]) for t in truth], dtype=np.int64)
    order = np.argsort(starts)
    starts = starts[order]
    taken = np.zeros(len(truth), dtype=bool)
    for rec in sorted(recs, key=lambda r: int(r["start"])):
        s = int(rec["start"])
        j = int(np.searchsorted(starts, s))
        near = [
            c
            for c in (j - 1, j)
            if 0 <= c < len(starts) and not taken[c] and abs(int(starts[c]) - s) <= tolerance_samples
        ]
        best = min(near, key=lambda c: abs(int(starts[c]) - s)) if near else None
        if best is None:
            score.n_spurious += 1
            continue
        taken[best] = True
        t = truth[int(order[best])]
        sender = int(t["device"])
        outcome = _outcome(rec, sender, sender in known)
        score.n_decided += 1
        counts = score.per_sender.setdefault(sender, {})
        counts[outcome] = counts.get(outcome, 0) + 1
        if sender in known:
            score.enrolled += 1
            if outcome == "correct":
                score.enrolled_correct += 1
            elif outcome == "rejected":
                score.enrolled_rejected += 1
            else:
                score.enrolled_wrong_device += 1
        else:
            score.strangers += 1
            if outcome == "caught":
                score.strangers_caught += 1
            else:
                score.strangers_accepted += 1
    whole = np.array([bool(truth[int(i)].get("whole", True)) for i in order], dtype=bool)
    score.n_missed = int((~taken & whole).sum())
    return score


def _outcome(rec: Mapping[str, Any], sender: int, enrolled: bool) -> str:
    """``correct``/``wrong``/``rejected`` for an enrolled sender, ``caught``/``accepted`` for a stranger."""
    refused = rec.get("verdict") in REJECTED or rec.get("device") is None or int(rec["device"]) < 0
    if not enrolled:
        return "caught" if refused else "accepted"
    if refused:
        return "rejected"
    return "correct" if int(rec["device"]) == sender else "wrong"
