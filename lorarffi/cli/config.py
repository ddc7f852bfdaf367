"""Long-lived settings (radio, model, registry, endpoints) from a TOML file and ``LORA_RFFI_*`` environment
variables, applied once to the argument parsers as their defaults: a flag beats the environment, which beats
the file, which beats the built-in default.

The file is ``--config FILE`` (before the subcommand), else ``$LORA_RFFI_CONFIG``, else
``$XDG_CONFIG_HOME/lora-rffi/config.toml`` (``~/.config/lora-rffi/config.toml``) when it exists::

    # shared keys: every command that has the option takes them
    registry = "fleet.db"
    center_freq_hz = "868.1M"
    gain_db = 40

    [live]                      # any option of one command (nested: [registry.list])
    model = "runs/model"
    source = "soapy:driver=uhd"
    publish = "tcp://127.0.0.1:5556"

A key is an option's long name, with dashes or underscores (``center-freq-hz``, ``center_freq_hz``), or its
destination; values are what the flag takes (strings are parsed as on the command line, ``true``/``false``
for switches, arrays for options taking several values). A key naming a positional argument (``model_dir``,
``registry`` of ``registry list``) makes that argument optional. Top-level keys are limited to
:data:`SHARED_KEYS`; the environment gives those as ``LORA_RFFI_<KEY>`` (``LORA_RFFI_REGISTRY``,
``LORA_RFFI_GAIN_DB``). An unknown key, table or variable, or a value the option refuses, is one error line
naming the file (or variable) and the key: exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorarffi.errors import ConfigError

__all__ = [
    "SHARED_KEYS",
    "ENV_PREFIX",
    "CONFIG_ENV",
    "add_config_arg",
    "default_config_path",
    "config_path",
    "apply_settings",
]

ENV_PREFIX = "LORA_RFFI_"
CONFIG_ENV = "LORA_RFFI_CONFIG"
SHARED_KEYS = (
    "source",
    "center_freq_hz",
    "fs_hz",
    "sf",
    "bw_hz",
    "gain_db",
    "antenna",
    "model_dir",
    "registry",
    "publish",
    "mqtt",
    "torch_device",
    "receiver_offset_ppm",
)
"""Settings the top level of the file and the environment give to every command with the option (the same
meaning everywhere). Other options go in the command's table."""

# Options whose destination differs from the shared key that sets them, per command.
_ALIASES = {"model_dir": {"live": "model"}, "torch_device": {"*": "device"}}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` on the top parser (read by :func:`apply_settings` before parsing)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"TOML file of long-lived settings (default ${CONFIG_ENV}, else "
        "$XDG_CONFIG_HOME/lora-rffi/config.toml when it exists); flags and LORA_RFFI_* variables override it",
    )


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/lora-rffi/config.toml``, or ``~/.config/lora-rffi/config.toml``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lora-rffi" / "config.toml"


def config_path(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file of a run: ``--config`` before the subcommand, else ``$LORA_RFFI_CONFIG``, else the
    default location when the file exists (None: no file)."""
    env = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
        if not arg.startswith("-"):
            break  # the subcommand: --config belongs before it
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    path = default_config_path(env)
    return path if path.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - python < 3.11
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


# -- the parser tree ----------------------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every parser that runs something (no further subcommands)."""
    subs = _subparsers(parser)
    if not subs:
        yield path, parser
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def _find_action(parser: argparse.ArgumentParser, key: str) -> argparse.Action | None:
    """The option (or positional) a key names: ``--key`` with dashes or underscores, or its destination."""
    dashed = key.replace("_", "-")
    for flag in (f"--{dashed}", f"--{key}"):
        if flag in parser._option_string_actions:
            return parser._option_string_actions[flag]
    for action in parser._actions:
        if action.dest == key and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            return action
    return None


def _shared_action(parser: argparse.ArgumentParser, command: str, key: str) -> argparse.Action | None:
    alias = _ALIASES.get(key, {})
    name = alias.get(command.split(" ")[0], alias.get("*", key))
    return _find_action(parser, name) or (None if name == key else _find_action(parser, key))


# -- values -------------------------------------------------------------------------------------------------
def _convert(action: argparse.Action, value: Any, origin: str, *, text: bool) -> Any:
    """A setting as the option would have parsed it; ``text``: the value is an environment string."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if text and value.strip().lower() in _TRUE + _FALSE:
            on = value.strip().lower() in _TRUE
        elif isinstance(value, bool):
            on = value
        else:
            raise ConfigError(f"{origin}: {value!r} is not valid: use true or false")
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) and not (text and value.strip().isdigit()):
            raise ConfigError(f"{origin}: {value!r} is not valid: use a whole number")
        return int(value)
    if action.nargs == 0:
        raise ConfigError(f"{origin}: this option takes no value and cannot be set here")
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(
        action, argparse._AppendAction
    )
    if many:
        items = value.split(",") if text else value
        if not isinstance(items, list):
            raise ConfigError(f"{origin}: {value!r} is not valid: give a list")
        return [_one(action, v, origin) for v in items]
    return _one(action, value, origin)


def _one(action: argparse.Action, value: Any, origin: str) -> Any:
    if isinstance(value, (bool, list, dict)):
        raise ConfigError(f"{origin}: {value!r} is not valid: give a value as the flag takes it")
    raw = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    try:
        out = action.type(raw) if callable(action.type) else raw
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{origin}: {value!r} is not valid ({exc})") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{origin}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return out


# -- applying them ------------------------------------------------------------------------------------------
def _collect_table(
    parser: argparse.ArgumentParser,
    command: tuple[str, ...],
    table: Mapping[str, Any],
    where: str,
    out: dict[tuple[str, ...], dict[str, tuple[argparse.Action, Any]]],
) -> None:
    subs = _subparsers(parser)
    for key, value in table.items():
        label = f"[{'.'.join(command)}] {key}" if command else key
        if key in subs and isinstance(value, dict):
            _collect_table(subs[key], (*command, key), value, where, out)
            continue
        action = _find_action(parser, key) if not subs else None
        if action is None:
            raise ConfigError(f"{where}: unknown key {label!r}: no option --{key.replace('_', '-')} in "
                              f"`lora-rffi {' '.join(command)}`")
        out.setdefault(command, {})[action.dest] = (action, _convert(action, value, f"{where}: {label}",
                                                                     text=False))


def _collect_shared(
    parser: argparse.ArgumentParser,
    values: Mapping[str, tuple[Any, str, bool]],
    out: dict[tuple[str, ...], dict[str, tuple[argparse.Action, Any]]],
) -> None:
    """Shared keys (value, origin, is_text) for every command with the option."""
    for command, leaf in _leaves(parser):
        for key, (value, origin, text) in values.items():
            action = _shared_action(leaf, " ".join(command), key)
            if action is not None:
                setting = _convert(action, value, origin, text=text)
                out.setdefault(command, {})[action.dest] = (action, setting)


def _set(
    parser: argparse.ArgumentParser, command: tuple[str, ...], settings: dict[str, tuple[Any, Any]]
) -> None:
    target = parser
    for name in command:
        target = _subparsers(target)[name]
    for action, value in settings.values():
        action.default = value
        action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"  # a positional given by the settings may be left out


def apply_settings(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> Path | None:
    """Give ``parser``'s subcommands the defaults the config file and the environment set (module docstring).

    Parameters
    ----------
    parser : ArgumentParser
        :func:`lorarffi.cli.build_parser`'s, before parsing.
    argv : sequence of str
        The command line (for ``--config``).
    environ : mapping, optional
        The environment (default ``os.environ``).

    Returns
    -------
    Path or None
        The config file read.

    Raises
    ------
    ConfigError
        An unreadable file, an unknown key, table or variable, or a value the option refuses.
    """
    env = os.environ if environ is None else environ
    path = config_path(argv, env)
    file_values: dict[str, Any] = _read_toml(path) if path is not None else {}
    per_command: dict[tuple[str, ...], dict[str, tuple[argparse.Action, Any]]] = {}
    shared = {}
    tables = {}
    commands = _subparsers(parser)
    for key, value in file_values.items():
        if isinstance(value, dict):
            if key not in commands:
                raise ConfigError(f"{path}: unknown table [{key}]: no command `lora-rffi {key}`")
            tables[key] = value
        elif key in SHARED_KEYS:
            shared[key] = (value, f"{path}: {key}", False)
        else:
            raise ConfigError(
                f"{path}: unknown key {key!r} at the top level (shared keys: {', '.join(SHARED_KEYS)}; "
                "put other options under [COMMAND])"
            )
    _collect_shared(parser, shared, per_command)
    from_file: dict[tuple[str, ...], dict[str, tuple[argparse.Action, Any]]] = {}
    for key, value in tables.items():
        _collect_table(commands[key], (key,), value, str(path), from_file)
    for command, settings in from_file.items():
        per_command.setdefault(command, {}).update(settings)
    env_values = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in SHARED_KEYS:
            raise ConfigError(
                f"environment variable {name}: unknown setting {key!r} "
                f"(LORA_RFFI_<KEY> for KEY in {', '.join(k.upper() for k in SHARED_KEYS)})"
            )
        env_values[key] = (value, f"environment variable {name}", True)
    env_settings: dict[tuple[str, ...], dict[str, tuple[argparse.Action, Any]]] = {}
    _collect_shared(parser, env_values, env_settings)
    for command, settings in env_settings.items():
        per_command.setdefault(command, {}).update(settings)  # the environment beats the file
    for command, settings in per_command.items():
        _set(parser, command, settings)
    return path
