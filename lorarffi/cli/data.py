"""Loading a labelled preamble selection for ``train`` and ``evaluate``, with the LoRa parameters to read
it at, and the one check that data and model share them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorarffi.cli.common import describe_ids, describe_slice, lora_config
from lorarffi.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from lorarffi.dsp.config import LoRaConfig

__all__ = ["Selection", "load_selection", "check_model_parameters"]

_LORA_FLAGS = ("sf", "bw_hz", "fs_hz", "rate_hz")


@dataclass(frozen=True)
class Selection:
    """Rows of a preamble file picked by ``--devices`` / ``--packets``.

    Attributes
    ----------
    iq : ndarray of complex64, shape (N, L)
        The rows as stored.
    device_ids : ndarray of int64, shape (N,)
    cfg : LoRaConfig
        LoRa parameters the rows are read at: the file's, else the fallback (a model's, or the project
        defaults), with the ``--sf/--bw-hz/--fs-hz`` flags applied.
    info : dict
        ``file``, ``devices``, ``packets``, ``n_packets`` (recorded with a trained model).
    file_cfg : LoRaConfig or None
        The parameters the file states (None: a file in the public layout that states none).
    meta : dict of ndarray
        The rows' stored metadata (:meth:`~lorarffi.datasets.native.PreambleFile.meta`: ``start``,
        ``snr_db``, ...; -1 / NaN where unknown).
    """

    iq: npt.NDArray[np.complex64]
    device_ids: npt.NDArray[np.int64]
    cfg: LoRaConfig
    info: dict[str, Any]
    file_cfg: LoRaConfig | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg_origin(self) -> str:
        """Where :attr:`cfg` comes from, for messages."""
        return "as the file states" if self.file_cfg is not None else "the file states none"


def _flags_given(args: argparse.Namespace) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in _LORA_FLAGS if getattr(args, n, None) is not None]


def load_selection(args: argparse.Namespace, *, fallback: LoRaConfig | None = None) -> Selection:
    """The rows of ``args.data`` restricted to ``--devices`` / ``--packets``.

    Parameters
    ----------
    args : Namespace
        ``data``, ``devices``, ``packets`` and the LoRa flags (when the command has them).
    fallback : LoRaConfig, optional
        Parameters of a file that states none (the public layout): a model's own, for commands that read
        preambles for a model; default the project's (SF7, 125 kHz, 1 MS/s, the public dataset's).
    """
    from lorarffi.datasets.native import open_preamble_file

    with open_preamble_file(args.data) as pf:
        rows = pf.select(args.devices, args.packets)
        if rows.size == 0:
            raise ConfigError(
                f"{args.data}: no packet in the selection (--devices "
                f"{'all' if args.devices is None else describe_ids(args.devices)}, --packets "
                f"{describe_slice(args.packets)}): the file holds devices {describe_ids(pf.device_ids)}"
            )
        iq = pf.read_rows(rows)
        ids = pf.device_ids[rows]
        meta = pf.meta(rows)
        file_cfg = pf.cfg
    cfg = lora_config(args, file_cfg if file_cfg is not None else fallback)  # flags override
    packets = None if args.packets is None else [args.packets.start, args.packets.stop]
    info = {"file": str(args.data), "devices": args.devices, "packets": packets, "n_packets": int(rows.size)}
    return Selection(iq, ids, cfg, info, file_cfg, meta)


def _describe(cfg: LoRaConfig) -> str:
    return f"SF{cfg.sf}, {cfg.bw_hz / 1e3:g} kHz, {cfg.fs_hz / 1e6:g} MS/s"


def check_model_parameters(
    sel: Selection, model: LoRaConfig, args: argparse.Namespace, model_dir: object
) -> None:
    """Refuse, in one line, data read at other LoRa parameters (SF, bandwidth, sample rate) than the model's.

    Raises
    ------
    ConfigError
        Naming the data's parameters and where they come from, and the model's.
    """
    if (sel.cfg.sf, sel.cfg.bw_hz, sel.cfg.fs_hz) == (model.sf, model.bw_hz, model.fs_hz):
        return
    flags = _flags_given(args)
    origin = sel.cfg_origin + (f", with {'/'.join(flags)}" if flags else "")
    raise ConfigError(
        f"{sel.info['file']}: the data are {_describe(sel.cfg)} ({origin}) but the model {model_dir} was "
        f"trained at {_describe(model)}: give data captured at the model's parameters"
    )
