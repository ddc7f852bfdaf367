"""The CLI's edges, in-process: one name per flag (old spellings still work, with a warning), every --help
complete, JSON without NaN, outputs that appear whole or not at all, and the defects of a first hour, each
with its exit code and its one stderr line naming the file or flag and the problem."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import stat

import numpy as np
import pytest

from lorarffi.cli import build_parser, main
from lorarffi.datasets.native import PreambleWriter, open_preamble_file
from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()


# -- helpers -------------------------------------------------------------------------------------------------


def _error_line(err: str) -> str:
    """The one error line of a failed command (log lines of other levels may precede it)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def fails(argv: list[str], capsys, *needles: str) -> str:
    """Run ``argv``: exit code 2 and one ``lora-rffi: error:`` line holding every needle."""
    capsys.readouterr()
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("lora-rffi: error: ")
    for needle in needles:
        assert needle in line, line
    return line


def usage_error(argv: list[str], capsys, *needles: str) -> str:
    """Run ``argv``: a usage error, exit code 2, one line ``lora-rffi CMD: error: ...`` with every needle."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def strict_json(text: str):
    """Parse JSON refusing NaN and infinities (what ``json.dumps`` writes by default and JSON forbids)."""

    def refuse(name: str):
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pathlib.Path:
    """train.h5 (devices 1-3), test.h5 (devices 1-3 and 4, which the model never sees) and a small model."""
    d = tmp_path_factory.mktemp("edges")
    fleet = make_fleet(4, seed=5, spread=5.0)
    kw = {"session": Session(day=1, minutes_since_power_on=20), "snr_db": (20, 30)}
    tr = simulate_preamble_set(fleet[:3], CFG, 12, rng=np.random.default_rng(1), **kw)
    te = simulate_preamble_set(fleet, CFG, 6, rng=np.random.default_rng(2), **kw)
    for name, ps in (("train.h5", tr), ("test.h5", te)):
        with PreambleWriter(d / name, CFG, source="test") as w:
            w.append(ps.preambles, ps.device_ids, cfo_hz=ps.cfo_hz)
    argv = ["-q", "train", str(d / "train.h5"), "-o", str(d / "model"), *_QUICK, "--epochs", "1"]
    assert main(argv) == 0
    return d


_QUICK = ["--model", "rffi_net", "--batch-size", "16", "--augment", "", "--no-progress"]


def _sha(path: pathlib.Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- one coherent CLI ----------------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, name: str = "lora-rffi"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


_NO_HELP_NEEDED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def test_every_help_has_a_plain_description_an_example_and_help_for_every_option() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 15  # the subcommands and the dataset/registry actions were all walked
    for name, parser in parsers:
        assert parser.description and "``" not in parser.description, name
        assert parser.epilog and "example: lora-rffi" in parser.epilog, name
        for action in parser._actions:
            if not isinstance(action, _NO_HELP_NEEDED):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        for action in parser._actions:  # a default worth telling is told
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS, 0, ""):
                if not isinstance(action, _NO_HELP_NEEDED + (argparse._CountAction,)):
                    assert "default" in (action.help or "") or "(default" in text, (name, action.dest)


def test_help_shows_the_defaults_of_train_and_export_onnx(capsys) -> None:
    from lorarffi.rffi.recipe import RECIPE

    for argv, expected in (
        (["train", "--help"], [f"(default {RECIPE.optimizer})", f"(default {RECIPE.epochs} for softmax",
                               f"(default {RECIPE.batch_size})", f"(default {RECIPE.lr:g})",
                               f"(default {RECIPE.lr_factor:g})", f"(default {RECIPE.val_split:g})",
                               f"(default {RECIPE.seed})"]),
        (["export-onnx", "--help"], ["--opset OPSET", "(default 17)"]),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        for needle in expected:
            assert needle in text, (argv, needle)


def test_train_with_no_options_is_the_benchmarked_recipe() -> None:
    from lorarffi.cli.train import train_config
    from lorarffi.rffi.recipe import RECIPE
    from lorarffi.rffi.train import TrainConfig

    tc = train_config(build_parser().parse_args(["train", "DATA.h5", "--out", "M"]))
    assert tc == TrainConfig() and tc.augment == RECIPE.augment and tc.augment  # augmentation on
    assert (tc.model, tc.representation["name"], tc.epochs) == (RECIPE.model, RECIPE.representation,
                                                                 RECIPE.epochs)  # fmt: skip


def test_train_offers_every_registered_representation() -> None:
    from lorarffi.cli.train import REPRESENTATIONS
    from lorarffi.dsp.representation import available_representations
    from lorarffi.rffi.recipe import RECIPE

    assert sorted(REPRESENTATIONS) == sorted(available_representations())
    args = build_parser().parse_args(["train", "d.h5", "-o", "m", "--representation", RECIPE.representation])
    assert args.representation == RECIPE.representation  # the default can also be asked for by name


@pytest.mark.parametrize(
    ("argv", "dest", "value", "old"),
    [
        (["capture", "--args", "x", "-f", "868M", "--rate", "1M", "-o", "c"], "fs_hz", 1e6, "--rate"),
        (["capture", "--args", "x", "--freq", "868M", "-s", "1M", "-o", "c.sigmf-meta"], "center_freq_hz",
         868e6, "--freq"),
        (["capture", "--args", "x", "-f", "868M", "-s", "1M", "--output", "c.sigmf-meta"], "out",
         "c.sigmf-meta", "--output"),
        (["capture", "--args", "x", "-f", "868M", "-s", "1M", "-o", "c", "--bandwidth-hz", "200k"],
         "bandwidth_hz", 200e3, "--bandwidth-hz"),
        (["simulate", "--devices", "3", "-o", "x.h5"], "devices", 3, "--devices"),
        (["live", "--devices", "3"], "devices", 3, "--devices"),
        (["evaluate", "m", "d.h5", "--device", "cpu"], "device", "cpu", "--device"),
        (["enroll", "m", "d.h5", "--registry", "r.db", "--device", "cpu"], "device", "cpu", "--device"),
    ],
)  # fmt: skip
def test_old_spellings_still_work_and_are_flagged_deprecated(argv, dest, value, old) -> None:
    from lorarffi.cli.common import deprecated_flags

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    notes = deprecated_flags(args)
    assert len(notes) == 1 and notes[0].startswith(f"{old} is deprecated: use --")


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["capture", "--args", "x", "-f", "868M", "-s", "1M", "-o", "c"], "fs_hz", 1e6),
        (["detect", "x", "-s", "2M"], "fs_hz", 2e6),
        (["simulate", "--n-devices", "3", "-o", "x.h5", "-f", "433.92M"], "center_freq_hz", 433.92e6),
        (["train", "d.h5", "-o", "m"], "out", "m"),
        (["export-onnx", "m", "-o", "m.onnx"], "out", "m.onnx"),
        (["live", "--n-devices", "5"], "devices", 5),
        (["evaluate", "m", "d.h5", "--torch-device", "cpu"], "device", "cpu"),
        (["dataset", "info", "x.cf32", "-s", "1M"], "fs_hz", 1e6),
    ],
)
def test_the_new_names_parse_without_a_note(argv, dest, value) -> None:
    from lorarffi.cli.common import deprecated_flags

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value and deprecated_flags(args) == []


def test_the_old_spelling_warns_in_one_stderr_line(tmp_path, capsys, caplog) -> None:
    out = tmp_path / "x.h5"
    assert main(["simulate", "--devices", "1", "--packets", "1", "-o", str(out)]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "--devices is deprecated: use --n-devices"
    ]
    with open_preamble_file(out) as pf:  # and it did what it always did
        assert len(pf) == 1


def test_quiet_and_verbose_work_after_the_subcommand() -> None:
    args = build_parser().parse_args(["simulate", "--n-devices", "1", "-o", "x.h5", "-q"])
    assert args.quiet is True and args.verbose == 0
    args = build_parser().parse_args(["detect", "x.wav", "-vv"])
    assert args.verbose == 2 and args.quiet is False
    args = build_parser().parse_args(["-q", "detect", "x.wav"])  # before it, as ever
    assert args.quiet is True


def test_json_output_is_records_then_one_summary_object(tmp_path, capsys) -> None:
    out = tmp_path / "x.h5"
    assert main(["-q", "simulate", "--n-devices", "2", "--packets", "3", "-o", str(out), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    summary = strict_json(line)
    assert summary == {"type": "summary", "file": str(out), "n_packets": 6, "n_devices": 2,
                       "device_ids": [1, 2], "session": 1}  # fmt: skip
    convert = ["-q", "dataset", "convert", str(out), str(tmp_path / "p.h5"), "--to", "public", "--json"]
    assert main(convert) == 0
    assert strict_json(capsys.readouterr().out)["n_packets"] == 6


def test_json_text_turns_nan_into_null_and_says_why() -> None:
    from lorarffi.cli.common import json_text

    nan, inf = float("nan"), float("inf")
    d = strict_json(json_text({"a": nan, "b": [1.0, inf], "c": 2.5}, reasons={"a": "why a"}))
    assert d["a"] is None and d["b"] == [1.0, None] and d["c"] == 2.5
    assert d["null_reasons"] == {"a": "why a", "b[1]": "infinite"}
    assert "null_reasons" not in strict_json(json_text({"a": 1.0}))  # nothing to explain: no field


# -- outputs appear whole or not at all ----------------------------------------------------------------------


def test_atomic_path_keeps_the_old_file_on_failure_and_gives_the_umask_mode(tmp_path, umask_022) -> None:
    from lorarffi.datasets.atomic import atomic_path, write_atomic

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    target.chmod(0o600)
    write_atomic(target, "new")
    assert target.read_text() == "new" and _mode(target) == umask_022


def test_interrupted_simulate_leaves_no_file_and_the_rerun_works(tmp_path, capsys, monkeypatch) -> None:
    import lorarffi.sim

    real = lorarffi.sim.simulate_preamble_set
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C while the second device is simulated
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "big.h5"
    argv = ["-q", "simulate", "--n-devices", "3", "--packets", "2", "-o", str(out)]
    monkeypatch.setattr(lorarffi.sim, "simulate_preamble_set", interrupted)
    assert main(argv) == 130
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one
    monkeypatch.setattr(lorarffi.sim, "simulate_preamble_set", real)
    assert main(argv) == 0  # the rerun does not find a file in its way
    with open_preamble_file(out) as pf:
        assert sorted(set(pf.device_ids.tolist())) == [1, 2, 3] and len(pf) == 6


def test_outputs_get_the_same_mode_as_their_siblings(tmp_path, capsys, umask_022, data) -> None:
    assert main(["-q", "simulate", "--n-devices", "1", "--packets", "1", "-o", str(tmp_path / "a.h5")]) == 0
    stream = ["-q", "simulate", "--stream", str(tmp_path / "r.sigmf-meta"), "--n-devices", "1"]
    assert main([*stream, "--duration-s", "0.2"]) == 0
    assert main(["-q", "export-onnx", str(data / "model"), "-o", str(tmp_path / "m.onnx")]) == 0
    written = [tmp_path / n for n in ("a.h5", "r.sigmf-meta", "r.sigmf-data", "m.onnx")]
    written += [p for p in (data / "model").iterdir() if p.is_file()]
    assert {p.name: _mode(p) for p in written} == {p.name: umask_022 for p in written}


# -- what a first hour ran into ------------------------------------------------------------------------------


def test_zmq_sources_without_a_rate_or_with_a_bad_endpoint_are_one_line(capsys) -> None:
    for spec in ("zmq:tcp://127.0.0.1:5555", "zmq+pull:tcp://127.0.0.1:5555"):
        argv = ["live", "--source", spec, "--duration-s", "1"]
        fails(argv, capsys, spec, "give the sample rate", "--fs-hz")
    fails(["live", "--source", "zmq:nonsense", "-s", "1M"], capsys, "zmq:nonsense is not a ZeroMQ endpoint")
    fails(["live", "--source", "zmq:tcp://127.0.0.1", "-s", "1M"], capsys, "the port is missing")


def test_a_tampered_weights_file_is_refused(data, tmp_path, capsys) -> None:
    from safetensors.torch import load

    model = tmp_path / "model"
    shutil.copytree(data / "model", model)
    argv = ["-q", "evaluate", str(model), str(data / "test.h5"), "--devices", "1-3", "--json"]
    assert main(argv) == 0  # the intact copy evaluates
    weights = model / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x40  # one bit of the last tensor value
    weights.write_bytes(bytes(raw))
    load(bytes(raw))  # still a readable safetensors file: only the recorded hash tells
    fails(argv, capsys, str(weights), "SHA-256", "changed or damaged")


def test_a_torch_device_that_is_not_there_is_a_usage_error(capsys) -> None:
    import torch

    base = ["evaluate", "model", "data.h5"]
    usage_error([*base, "--device", "banana"], capsys, "'banana' is not a torch device")
    usage_error([*base, "--torch-device", "cuda:x"], capsys, "--torch-device")
    if not torch.cuda.is_available():
        usage_error([*base, "--torch-device", "cuda"], capsys, "no CUDA device")


def test_a_batch_size_of_zero_is_a_usage_error(capsys) -> None:
    usage_error(["evaluate", "m", "d.h5", "--batch-size", "0"], capsys, "--batch-size", "0 is not valid")
    usage_error(["train", "d.h5", "-o", "m", "--batch-size", "0"], capsys, "--batch-size")


def test_a_reversed_snr_range_is_one_line(data, tmp_path, capsys) -> None:
    argv = ["train", str(data / "train.h5"), "-o", str(tmp_path / "m"), "--augment", "awgn"]
    flag = "--aug-snr-db"
    usage_error([*argv, flag, "40:5"], capsys, flag, "'40:5'", "low end comes first", "5:40")
    usage_error([*argv, flag, "loud"], capsys, flag, "'loud' is not an SNR range like 5:30")
    assert not (tmp_path / "m").exists()


def test_an_existing_file_where_a_directory_goes_is_one_line(data, tmp_path, capsys) -> None:
    f = tmp_path / "taken"
    f.write_text("x")
    argv = ["train", str(data / "train.h5"), "-o", str(f)]
    fails(argv, capsys, f"{f} is a file, not a directory", "-o/--out")
    argv = ["evaluate", str(data / "model"), str(data / "test.h5"), "--plots", str(f)]
    fails(argv, capsys, f"{f} is a file, not a directory", "--plots")
    assert f.read_text() == "x"


def test_zero_threads_and_a_negative_time_cap_are_usage_errors(capsys) -> None:
    usage_error(["live", "--threads", "0"], capsys, "--threads", "0 is not valid")
    usage_error(["train", "d.h5", "-o", "m", "--threads", "0"], capsys, "--threads")
    usage_error(["train", "d.h5", "-o", "m", "--max-time-s", "-1"], capsys, "--max-time-s", "-1 is not valid")


def test_an_interrupted_training_leaves_no_model_and_resume_finishes_it(
    data, tmp_path, capsys, monkeypatch
) -> None:
    import lorarffi.rffi.train as rt

    real, epochs = rt.train_one_epoch, []

    def interrupted(*a, **k):
        epochs.append(1)
        if len(epochs) == 2:  # Ctrl-C during the second epoch
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "m"
    argv = ["train", str(data / "train.h5"), "-o", str(out), *_QUICK, "--epochs", "3"]
    monkeypatch.setattr(rt, "train_one_epoch", interrupted)
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted: training of" in err and "--resume" in err
    assert not out.exists()  # nothing that looks like a finished model
    partial = tmp_path / ".m.partial"
    state = json.loads((partial / "train_state" / "state.json").read_text())
    assert state["meta"]["epoch"] == 1
    # the earlier run took "a long time": a resumed run's time cap counts its own time only
    state["meta"]["elapsed_s"] = 1e6
    (partial / "train_state" / "state.json").write_text(json.dumps(state))
    monkeypatch.setattr(rt, "train_one_epoch", real)
    assert main(["-q", *argv, "--resume", "--max-time-s", "3600"]) == 0
    summary = strict_json(capsys.readouterr().out.splitlines()[-1])
    assert summary["stopped"] == "epochs" and summary["epochs_run"] == 3 and summary["model_dir"] == str(out)
    assert (out / "weights.safetensors").is_file() and not partial.exists()


def test_resume_with_nothing_to_resume_is_one_line(data, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    fails(["train", str(data / "train.h5"), "-o", str(out), "--resume"], capsys, f"{out}: nothing to resume")
    assert not out.exists()
    fails(["train", str(data / "train.h5"), "-o", str(out), "--resume", "--overwrite"], capsys, "give one")


def test_an_existing_model_is_replaced_only_with_overwrite(data, tmp_path, capsys) -> None:
    model = tmp_path / "model"
    shutil.copytree(data / "model", model)
    before = _sha(model / "weights.safetensors")
    argv = ["-q", "train", str(data / "train.h5"), "-o", str(model), *_QUICK, "--epochs", "1", "--seed", "9"]
    fails(argv, capsys, f"{model} exists", "--overwrite")
    assert _sha(model / "weights.safetensors") == before
    assert main([*argv, "--overwrite"]) == 0
    assert _sha(model / "weights.safetensors") != before  # another seed: other weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_evaluating_only_unknown_devices_gives_null_and_why(data, capsys, caplog) -> None:
    argv = ["-q", "evaluate", str(data / "model"), str(data / "test.h5"), "--devices", "4", "--json"]
    assert main(argv) == 0
    out = strict_json(capsys.readouterr().out)
    assert out["accuracy_cnn"] is None and out["accuracy_hybrid"] is None
    assert "no packet of a device the model knows" in out["null_reasons"]["accuracy_cnn"]
    assert out["unknown_devices"] == [4] and out["n_unknown_device_packets"] == 6 and out["n_packets"] == 0
    assert any("the model knows devices 1-3; these are 4" in r.getMessage() for r in caplog.records)


def test_errors_name_cli_flags_not_python_keywords(tmp_path, capsys) -> None:
    out = tmp_path / "x.h5"
    argv = ["simulate", "--n-devices", "1", "--packets", "1", "-o", str(out)]
    assert main(argv) == 0
    line = fails(argv, capsys, f"{out} exists", "--overwrite")
    assert "=True" not in line
    stream = ["simulate", "--stream", str(tmp_path / "r.sigmf-meta"), "--n-devices", "1"]
    stream += ["--duration-s", "0.1"]
    assert main(stream) == 0
    fails(stream, capsys, "exists", "--overwrite")


def test_an_onnx_export_onnxruntime_rejects_is_not_written(data, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    fails(["export-onnx", str(data / "model"), "-o", str(out), "--opset", "1"], capsys, "opset 1")
    assert list(tmp_path.iterdir()) == []
    assert main(["-q", "export-onnx", str(data / "model"), "-o", str(out), "--json"]) == 0  # control
    assert strict_json(capsys.readouterr().out) == {"type": "summary", "file": str(out), "opset": 17}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "logits"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_zmq_source_that_never_delivers_says_what_it_waited_for(capsys) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"  # nothing sends there
    argv = ["live", "--source", f"zmq:{endpoint}", "-s", "1M", "--timeout-s", "0.3", "--no-view"]
    fails(argv, capsys, "nothing arrived within --timeout-s 0.3", f"ZMQ PUB sink at {endpoint}")
    argv = ["live", "--source", "zmq:tcp://256.1.1.1:5555", "-s", "1M", "--timeout-s", "2", "--no-view"]
    fails(argv, capsys, "256.1.1.1 is not an IPv4")  # refused before waiting (a regression fails in 2 s)


def test_the_timeout_stops_a_source_that_delivers(capsys) -> None:
    argv = ["-q", "live", "--source", "sim", "--timeout-s", "0.4", "--speed", "1", "--json", "--no-view"]
    assert main(argv) == 0  # control: samples arrived, so the timeout is the end of a normal run
    summary = strict_json(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert 0 < summary["n_samples"] and summary["wall_s"] < 30


@pytest.mark.parametrize("port", ["99999", "tcp://127.0.0.1:70000", "tcp://127.0.0.1:x"])
def test_an_invalid_publish_port_is_refused(port, capsys) -> None:
    fails(["live", "--source", "sim", "--duration-s", "0.1", "--publish", port], capsys, "is not valid")


def test_a_file_that_is_not_what_its_name_says_is_named(tmp_path, capsys) -> None:
    text = tmp_path / "text.h5"
    text.write_text("hello, not HDF5\n")
    fails(["dataset", "info", str(text)], capsys, f"{text}: not an HDF5 file")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"\x00\x01" * 100)
    fails(["detect", str(garbage)], capsys, f"{garbage}: not a WAV file")
    raw = tmp_path / "x.cf32"  # a name that claims nothing is still a raw recording
    raw.write_bytes(b"\x00" * 80)
    fails(["detect", str(raw)], capsys, "raw headerless recording", "--format")


def test_messages_are_plain_words(data, tmp_path, capsys) -> None:
    argv = ["evaluate", str(data / "model"), str(data / "test.h5"), "--devices", "1", "--packets", "500:1000"]
    line = fails(argv, capsys, "--devices 1", "--packets 500:1000", "holds devices 1-4")
    assert "slice(" not in line and "[1]" not in line
    line = fails([*argv[:4], "8,9"], capsys, "devices 8, 9 are not in", "holds devices 1")
    assert "[" not in line
    with PreambleWriter(tmp_path / "p.h5", CFG, source="a") as w:
        w.append(np.zeros((1, 8192), np.complex64), [1])
    from lorarffi.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        PreambleWriter(tmp_path / "p.h5", CFG.replace(sf=8), source="b", append=True)
    assert "LoRaConfig(" not in str(err.value) and "SF7, 125 kHz, 1 MS/s" in str(err.value)


def test_capture_refuses_a_name_that_is_not_sigmf(tmp_path, capsys) -> None:
    out = tmp_path / "cap.wav"
    argv = ["capture", "--args", "driver=none", "-f", "868M", "-s", "1M", "-o", str(out)]
    fails(argv, capsys, f"{out}: capture writes a SigMF recording", f"-o {tmp_path / 'cap.sigmf-meta'}")
    assert list(tmp_path.iterdir()) == []


def _sigmf_at_sf9(path: pathlib.Path, starts: tuple[int, ...], *, state_sf: bool = False) -> None:
    """A SigMF recording of SF9 packets whose metadata does not state the SF (as other tools write), or with
    ``state_sf`` does (``lorarffi:sf``, as lora-rffi writes)."""
    from lorarffi.datasets.sigmf_io import write_sigmf

    cfg = LoRaConfig(sf=9)
    rng = np.random.default_rng(4)
    iq = np.zeros(max(starts) + 120_000, np.complex64)
    for s in starts:
        pk = packet_waveform(cfg, rng.integers(0, 512, 6), cfo_hz=1_500.0)
        iq[s : s + pk.size] += 0.5 * pk
    iq += (0.02 * (rng.standard_normal(iq.size) + 1j * rng.standard_normal(iq.size))).astype(np.complex64)
    write_sigmf(path, iq, cfg.fs_hz, cfg=cfg if state_sf else None)


def test_detect_searches_the_spreading_factor_a_file_does_not_state(tmp_path, capsys) -> None:
    rec = tmp_path / "sf9.sigmf-meta"
    starts = (20_000, 200_000)
    _sigmf_at_sf9(rec, starts)
    assert "lorarffi:sf" not in json.loads(rec.read_text())["global"]
    assert main(["detect", str(rec), "--json"]) == 0
    out, err = capsys.readouterr()
    *rows, summary = [strict_json(line) for line in out.splitlines()]
    assert summary["sf"] == 9 and summary["n_packets"] == 2
    assert summary["packets_per_searched_sf"]["9"] == 2
    assert [abs(r["start"] - s) <= 2 for r, s in zip(rows, starts, strict=True)] == [True, True]
    assert "the file states no spreading factor: searched SF7-SF12" in err and "give --sf" in err
    assert main(["detect", str(rec), "--sf", "7", "--json"]) == 0  # told SF7: nothing, as before
    assert strict_json(capsys.readouterr().out.splitlines()[-1])["n_packets"] == 0
    stated = tmp_path / "stated.sigmf-meta"
    _sigmf_at_sf9(stated, starts, state_sf=True)
    assert main(["detect", str(stated), "--json"]) == 0  # the file says SF9: no search
    summary = strict_json(capsys.readouterr().out.splitlines()[-1])
    assert summary["sf"] == 9 and summary["n_packets"] == 2 and summary["packets_per_searched_sf"] is None


def test_jsonl_files_mark_each_run(tmp_path, capsys) -> None:
    jsonl = tmp_path / "decisions.jsonl"
    argv = ["-q", "live", "--source", "sim", "--seed", "1", "--snr-db", "25", "--duration-s", "1",
            "--speed", "0", "--no-view", "--jsonl", str(jsonl)]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0
    lines = [strict_json(line) for line in jsonl.read_text().splitlines()]
    runs = [i for i, rec in enumerate(lines) if rec.get("type") == "run"]
    assert runs[0] == 0 and len(runs) == 2  # one marker first in each run
    first, second = lines[runs[0]], lines[runs[1]]
    assert first["run_id"] != second["run_id"] and "live" in first["command"] and first["time_utc"]
    decisions = [rec for rec in lines if rec.get("type") != "run"]
    assert decisions and all("start" in rec for rec in decisions)
    assert runs[1] - 1 == len(decisions) // 2  # the two identical runs decided as many packets each


def test_capture_old_spellings_and_json_through_the_replay_radio(replay_module, tmp_path, capsys) -> None:
    from lorarffi.datasets.recording import open_recording

    x = (np.arange(5_000) % 7 - 3).astype(np.complex64) * 0.1
    src = tmp_path / "src.cf32"
    x.tofile(src)
    out = tmp_path / "cap.sigmf-meta"
    argv = ["-q", "capture", "--args", f"driver=replay,file={src},rate=1e6,mtu=1000", "--freq", "868.1M",
            "--rate", "1M", "--output", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    summary = strict_json(capsys.readouterr().out)
    assert summary == {"type": "summary", "file": str(out), "n_samples": 5_000, "fs_hz": 1e6,
                       "duration_s": 0.005, "n_lost_samples": 0, "n_overflows": 0}  # fmt: skip
    with open_recording(out) as rec:
        np.testing.assert_array_equal(rec.read(0, rec.n_samples), x)
    fails(argv[1:], capsys, "exists", "--overwrite")  # the recording is not replaced silently
    assert main([*argv, "--overwrite"]) == 0
