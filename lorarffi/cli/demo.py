"""``lora-rffi demo``: the three uses end to end on the built-in simulated radio, then one summary table.

Each step is an ordinary ``lora-rffi`` command run as its own process (printed before it runs, so it can be
copied), its JSON read back for the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Any

from lorarffi.errors import ConfigError
from lorarffi.rffi.recipe import EXTRACTOR_OBJECTIVE

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run", "DemoPlan"]

HELP = "run the three uses end to end on the simulated radio and summarise"
DESCRIPTION = (
    "A guided tour on the built-in simulated radio, each step a lora-rffi command you can copy. It simulates "
    "a fleet of look-alike LoRa devices, trains the default model (the benchmarked recipe) on some of them "
    "and evaluates it on a later day with and without the CFO gate; trains an embedding extractor (the same "
    "recipe with the supervised contrastive objective), enrolls the devices in a registry and then two more "
    "without retraining (the extractor's weights are checked unchanged), then authenticates a live stream "
    "from the simulated radio "
    "that also carries two rogues, one of them tuned to a legitimate device's carrier frequency. The live "
    "step runs at a pace this machine sustains (measured first), so no sample is lost. It ends with one "
    "table (accuracy, rogues caught, false accepts, dropped samples, latency) and the paths of every file "
    "it wrote."
)
EPILOG = "example: lora-rffi demo -o out/demo"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of the tour. Devices ``1..n_trained`` train the model, the next ``n_new`` are enrolled later;
    one plain rogue and one tuned to device 1's CFO join the live stream. ``epochs`` and ``max_time_s``
    None: the recipe's own (``lorarffi.rffi.recipe.RECIPE``) for the closed-set model; the extractor trains
    ``extractor_epochs`` epochs under the recipe's time cap unless ``max_time_s`` is given."""

    n_trained: int = 6
    n_new: int = 2
    spread: float = 3.0
    fleet_seed: int = 0
    train_packets: int = 150
    test_packets: int = 50
    enroll_packets: int = 100
    epochs: int | None = None
    extractor_epochs: int = 20
    max_time_s: float | None = None
    probe_s: float = 10.0
    live_s: float = 60.0
    live_seed: int = 5

    @property
    def n_devices(self) -> int:
        return self.n_trained + self.n_new


QUICK = DemoPlan(
    n_trained=3, n_new=1, train_packets=40, test_packets=15, enroll_packets=30, epochs=2, extractor_epochs=2,
    max_time_s=60.0, probe_s=3.0, live_s=8.0,
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--out", default="out/demo", metavar="DIR", help="where everything goes (default out/demo)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny version (3 devices, 2 epochs, 8 s live) that checks the tour runs, in about a minute",
    )
    p.add_argument(
        "--live-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"seconds of signal in the live step (default {DemoPlan.live_s:g})",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")


@dataclasses.dataclass
class _Step:
    """Runs ``lora-rffi`` commands as child processes, echoing each one to stderr."""

    out: pathlib.Path
    steps: int = 0

    def __call__(self, title: str, argv: list[str], *, json_out: bool = False) -> Any:
        self.steps += 1
        print(f"\n[{self.steps}] {title}\n$ lora-rffi {shlex.join(argv)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "lorarffi.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=None,  # progress and warnings go straight to the terminal
            text=True,
            check=False,
        )
        log_file = self.out / "logs" / f"{self.steps:02d}-{argv[0]}.out"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(proc.stdout)
        if proc.returncode != 0:
            raise ConfigError(f"step {self.steps} ({title}) failed (exit code {proc.returncode}): see above")
        dt = time.perf_counter() - t0
        if not json_out:
            print(proc.stdout.rstrip(), file=sys.stderr)
            print(f"    ({dt:.0f} s)", file=sys.stderr, flush=True)
            return None
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        print(f"    ({dt:.0f} s; output in {log_file})", file=sys.stderr, flush=True)
        return json.loads(lines[-1]) if lines else {}


def _budget(epochs: int | None, max_time_s: float | None) -> list[str]:
    """``train`` flags for a budget other than the recipe's."""
    return ([] if epochs is None else ["--epochs", str(epochs)]) + (
        [] if max_time_s is None else ["--max-time-s", f"{max_time_s:g}"]
    )


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sustainable_speed(realtime_factor: float | None) -> float:
    """Half of the measured processing rate (in multiples of real time), between 0.25x and 10x: room for
    the spikes of a shared machine."""
    if realtime_factor is None or not realtime_factor > 0:
        return 1.0
    return float(min(10.0, max(0.25, round(0.5 * realtime_factor, 1))))


def run(args: argparse.Namespace) -> int:
    from lorarffi.datasets.atomic import write_atomic
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.live.truth import read_jsonl, score_decisions

    plan = QUICK if args.quick else DemoPlan()
    if args.live_s is not None:
        if not args.live_s > 0:
            raise ConfigError(f"--live-s {args.live_s} is not valid: give a positive number of seconds")
        plan = dataclasses.replace(plan, live_s=float(args.live_s))
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    step = _Step(out)
    t_start = time.perf_counter()
    n, k = plan.n_devices, plan.n_trained
    trained, new = f"1-{k}", (f"{k + 1}-{n}" if n > k + 1 else str(n))
    fleet = ["--n-devices", str(n), "--spread", f"{plan.spread:g}", "--seed", str(plan.fleet_seed)]
    day1, day2 = out / "day1.h5", out / "day2.h5"
    model, extractor = out / "model", out / "extractor"
    registry, plots = out / "registry.db", out / "plots"
    decisions, truth = out / "decisions.jsonl", out / "truth.jsonl"
    for stale in (registry, decisions, truth):
        stale.unlink(missing_ok=True)

    step(
        f"simulate day 1 of {n} look-alike devices ({plan.train_packets} packets each)",
        ["simulate", *fleet, "--packets", str(plan.train_packets), "--session", "1", "-o", str(day1),
         "--overwrite"],
    )  # fmt: skip
    step(
        f"train the default model on devices {trained} (the benchmarked recipe"
        + (f", {plan.epochs} epochs)" if plan.epochs else ", its defaults)"),
        ["train", str(day1), "--devices", trained, "-o", str(model), "--overwrite", "--seed", "0",
         *_budget(plan.epochs, plan.max_time_s), "--no-progress"],
    )  # fmt: skip
    step(
        f"simulate day 2 (another day and place; {plan.test_packets} packets each)",
        ["simulate", *fleet, "--packets", str(plan.test_packets), "--session", "2", "-o", str(day2),
         "--overwrite"],
    )  # fmt: skip
    ev = step(
        f"evaluate on day 2, devices {trained}: the CNN alone and with the CFO gate",
        ["evaluate", str(model), str(day2), "--devices", trained, "--plots", str(plots), "--json"],
        json_out=True,
    )
    step(
        f"train the embedding extractor for enrollment on devices {trained} (the recipe, "
        f"{EXTRACTOR_OBJECTIVE} objective, {plan.extractor_epochs} epochs)",
        ["train", str(day1), "--devices", trained, "-o", str(extractor), "--overwrite", "--seed", "0",
         "--objective", EXTRACTOR_OBJECTIVE, *_budget(plan.extractor_epochs, plan.max_time_s),
         "--no-progress"],
    )  # fmt: skip
    weights = extractor / "weights.safetensors"
    sha_before = _sha256(weights)
    enr = step(
        f"enroll devices {trained} in a registry ({plan.enroll_packets} day-1 packets each)",
        ["enroll", str(extractor), str(day1), "--registry", str(registry), "--devices", trained,
         "--packets", f"0:{plan.enroll_packets}", "--json"],
        json_out=True,
    )  # fmt: skip
    enr_new = step(
        f"enroll the new devices {new} without retraining",
        ["enroll", str(extractor), str(day1), "--registry", str(registry), "--devices", new,
         "--packets", f"0:{plan.enroll_packets}", "--json"],
        json_out=True,
    )  # fmt: skip
    weights_unchanged = _sha256(weights) == sha_before
    live = ["live", "--source", "sim", "--n-devices", str(n), "--spread", f"{plan.spread:g}",
            "--fleet-seed", str(plan.fleet_seed), "--rogues", "1", "--rogues-tuned-to", "1",
            "--model", str(extractor), "--registry", str(registry), "--no-view"]  # fmt: skip
    probe = step(
        "measure the pace this machine sustains (live, as fast as it can)",
        [*live, "--seed", str(plan.live_seed + 1), "--duration-s", f"{plan.probe_s:g}", "--speed", "0",
         "--no-drift-tracking", "--json"],
        json_out=True,
    )  # fmt: skip
    speed = _sustainable_speed((probe.get("summary") or {}).get("realtime_factor"))
    summary = step(
        f"authenticate the live stream at {speed:g}x real time: devices 1-{n}, a rogue, a rogue tuned to "
        "device 1's CFO",
        [*live, "--seed", str(plan.live_seed), "--duration-s", f"{plan.live_s:g}", "--speed", f"{speed:g}",
         "--jsonl", str(decisions), "--sim-truth", str(truth), "--json"],
        json_out=True,
    )["summary"]  # fmt: skip
    cfg = LoRaConfig()
    score = score_decisions(
        read_jsonl(decisions), read_jsonl(truth), range(1, n + 1), tolerance_samples=cfg.samples_per_symbol
    )
    rogue_ids = sorted({int(r["device"]) for r in read_jsonl(truth) if r["is_rogue"]})
    result = _result(plan, ev, enr, enr_new, weights_unchanged, summary, score, rogue_ids, speed)
    result["wall_s"] = time.perf_counter() - t_start
    result["files"] = {
        name: str(p)
        for name, p in (
            ("training data (day 1)", day1), ("test data (day 2)", day2), ("model", model),
            ("embedding extractor", extractor),
            ("plots", plots), ("registry", registry), ("live decisions", decisions),
            ("live ground truth", truth), ("step outputs", out / "logs"),
        )
        if p.exists()
    }  # fmt: skip
    write_atomic(out / "summary.json", json.dumps(result, indent=2) + "\n")
    result["files"]["this summary"] = str(out / "summary.json")
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


def _result(plan, ev, enr, enr_new, weights_unchanged, summary, score, rogue_ids, speed) -> dict[str, Any]:
    per = score.per_sender
    tuned_id = rogue_ids[-1] if rogue_ids else None
    plain = [r for r in rogue_ids if r != tuned_id]

    def caught(ids: list[int]) -> tuple[int, int]:
        c = sum(per.get(i, {}).get("caught", 0) for i in ids)
        return c, c + sum(per.get(i, {}).get("accepted", 0) for i in ids)

    new_ids = list(range(plan.n_trained + 1, plan.n_devices + 1))
    new_ok = sum(per.get(i, {}).get("correct", 0) for i in new_ids)
    new_all = sum(sum(per.get(i, {}).values()) for i in new_ids)
    lat = summary.get("latency_ms", {})
    return {
        "closed_set": {
            "devices": f"1-{plan.n_trained}",
            "accuracy_cnn": ev.get("accuracy_cnn"),
            "accuracy_hybrid": ev.get("accuracy_hybrid"),
            "n_packets": ev.get("n_packets"),
        },
        "enrollment": {
            "enrolled": enr.get("devices", enr),
            "enrolled_later": enr_new.get("devices", enr_new),
            "weights_unchanged": weights_unchanged,
        },
        "live": {
            "speed": speed,
            "stream_s": summary.get("stream_s"),
            "realtime_factor": summary.get("realtime_factor"),
            "n_packets": summary.get("n_packets"),
            "accuracy": score.to_dict()["accuracy"],
            "enrolled_packets": score.enrolled,
            "new_devices_correct": [new_ok, new_all],
            "rogue_caught": list(caught(plain)),
            "tuned_rogue_caught": list(caught([tuned_id] if tuned_id is not None else [])),
            "false_accepts": score.false_accepts,
            "missed_packets": score.n_missed,
            "n_lost_samples": summary.get("n_lost_samples"),
            "n_overflows": summary.get("n_overflows"),
            "loss_observable": summary.get("loss_observable"),
            "latency_ms_p50": lat.get("p50"),
            "latency_ms_p99": lat.get("p99"),
            "truth": score.to_dict(),
        },
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f} %"


def _share(pair: list[int]) -> str:
    ok, total = pair
    return "-" if not total else f"{100.0 * ok / total:.0f} % ({ok} of {total} packets)"


def _print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cs, lv = r["closed_set"], r["live"]
    t = Table(title="lora-rffi demo: summary", show_lines=False)
    t.add_column("what")
    t.add_column("measured", justify="right")
    t.add_row(f"closed set, day 2, devices {cs['devices']}: CNN alone", _pct(cs["accuracy_cnn"]))
    t.add_row("closed set, day 2: CNN + CFO gate (hybrid)", _pct(cs["accuracy_hybrid"]))
    t.add_row(
        "enrollment without retraining (extractor)",
        "weights unchanged" if r["enrollment"]["weights_unchanged"] else "WEIGHTS CHANGED",
    )
    t.add_row(
        f"live: enrolled devices named correctly ({lv['enrolled_packets']} packets)", _pct(lv["accuracy"])
    )
    t.add_row("live: the devices enrolled later", _share(lv["new_devices_correct"]))
    t.add_row("live: rogue caught", _share(lv["rogue_caught"]))
    t.add_row("live: rogue tuned to device 1's CFO caught", _share(lv["tuned_rogue_caught"]))
    t.add_row("live: false accepts (packets)", str(lv["false_accepts"]))
    t.add_row(
        f"live: dropped samples ({lv['stream_s']:.0f} s of signal at {lv['speed']:g}x real time)",
        f"{lv['n_lost_samples']:,} ({lv['n_overflows']} overflows)",
    )
    t.add_row("live: packets never decided", str(lv["missed_packets"]))
    p50, p99 = lv["latency_ms_p50"], lv["latency_ms_p99"]
    t.add_row("live: decision latency p50 / p99", "-" if p50 is None else f"{p50:.0f} / {p99:.0f} ms")
    con = Console(file=sys.stdout, width=110)
    con.print(t)
    con.print(f"finished in {r['wall_s']:.0f} s; files written:")
    for name, path in r["files"].items():
        con.print(f"  {name:<22} {path}")

