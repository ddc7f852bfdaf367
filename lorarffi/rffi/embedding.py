"""Embed preambles with a trained model directory: the fingerprints enrollment stores and authentication
compares.

>>> emb = load_embedder("runs/extractor")                    # doctest: +SKIP
>>> pre = emb.preprocess(stored_iq)                          # stored preambles    # doctest: +SKIP
>>> vectors = emb.embed(pre.iq)                              # (N, emb.dim), unit norm   # doctest: +SKIP
>>> vectors, cfo_hz = emb.embed_packets(packets)             # detected packets    # doctest: +SKIP

Every model directory embeds: a metric-trained one (``lora-rffi train --objective triplet|supcon|arcface``)
with its embedding, a softmax-trained one with its L2-normalised penultimate features (the input of its last
layer). :class:`Embedder` is a :class:`~lorarffi.rffi.inference.Classifier`, so packets reach the network the
one way classification takes (the model's view of detected packets, the preprocessing of stored ones, the
representation), and the CFO gate of the training devices comes with it (``gate``).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.cfo import compensate_cfo
from lorarffi.dsp.impairment import TxImpairments, tx_impairments
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ModelError
from lorarffi.rffi.checkpoint import CONFIG_FILE, ModelDirConfig, load_model
from lorarffi.rffi.inference import Classifier
from lorarffi.rffi.metric import canonical_objective

__all__ = ["Embedder", "load_embedder"]


class Embedder(Classifier):
    """A loaded model directory that maps preambles to unit-norm embeddings (see :func:`load_embedder`).

    Attributes
    ----------
    dim : int
        Length of an embedding.
    objective : str
        How the model was trained: ``"softmax"``, ``"triplet"``, ``"supcon"`` or ``"arcface"``.
    fingerprint : str
        The model's identity, ``"sha256:<hex>"`` of its weights file as ``config.json`` records it
        (``weights_sha256``): what a device registry is bound to. Empty when the config records none.
    """

    def __init__(
        self,
        model,
        config: ModelDirConfig,
        model_dir: pathlib.Path | None = None,
        fingerprint: str = "",
    ) -> None:
        if not hasattr(model, "penultimate"):
            raise ModelError(
                f"model {config.model_name!r} gives no penultimate features to embed packets with"
            )
        super().__init__(model, config, model_dir)
        self.dim: int = int(model.penultimate_dim)
        self.objective: str = canonical_objective(str(config.training.get("objective", "softmax")))
        self.fingerprint: str = fingerprint

    def _embedding(self, x):
        return self._torch.nn.functional.normalize(self.model.penultimate(x), dim=1)

    def embed(
        self,
        preambles: npt.ArrayLike,
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Unit-norm embeddings of preambles in the model's view.

        Parameters
        ----------
        preambles : array_like of complex64, shape (N, L)
            Aligned, unit-RMS preambles, CFO compensated if and only if the model was trained so:
            ``preprocess(iq).iq`` of stored preambles (as the datasets hold them), :meth:`packet_preambles` of
            detected packets; ``L >= lora.preamble_samples``.
        batch_size : int
            Packets per network call.
        progress : callable, optional
            Called with each network call's number of packets once it is through (a progress bar's advance).

        Returns
        -------
        ndarray of float32, shape (N, dim)
            L2 norm 1 per row (a row whose features are all zero stays zero).
        """
        return self._run_network(
            self._embedding, preambles, self.dim, batch_size=batch_size, progress=progress
        )

    def tx_impairments(self, preambles: npt.ArrayLike, cfo_hz: npt.ArrayLike | None) -> TxImpairments:
        """The IQ image and carrier leakage of preambles in the model's view (:meth:`embed`'s input), with
        their CFO estimates (N,), Hz: :func:`~lorarffi.dsp.impairment.tx_impairments` after the CFO is
        removed when the view keeps it. Rows whose CFO is unknown (NaN: not preambles) are not measured;
        ``cfo_hz=None``: every row of a CFO-compensated view is, none of a view that keeps the CFO."""
        x = np.atleast_2d(np.asarray(preambles, np.complex64))
        if cfo_hz is None:
            cfo_hz = np.full(x.shape[0], 0.0 if self.config.cfo_compensation else np.nan)
        cfo = np.asarray(cfo_hz, np.float64).reshape(-1)
        known = np.isfinite(cfo)
        out = TxImpairments.unknown(x.shape[0])
        if known.any():
            rows = x[known]
            if not self.config.cfo_compensation:
                rows = compensate_cfo(rows, cfo[known], self.lora.fs_hz)
            got = tx_impairments(rows, self.lora)
            for name in ("image", "leakage", "image_se", "leakage_se"):
                getattr(out, name)[known] = getattr(got, name)
        return out

    def embed_packets(
        self, packets: Sequence[Packet], *, batch_size: int = 64
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        """Embeddings (N, dim) of detected packets (:meth:`packet_preambles`) and their CFO estimates (N,),
        Hz."""
        cfo_hz = np.array([p.cfo_hz for p in packets], np.float64)
        return self.embed(self.packet_preambles(packets), batch_size=batch_size), cfo_hz


def _weights_fingerprint(model_dir: pathlib.Path) -> str:
    sha = json.loads((model_dir / CONFIG_FILE).read_text()).get("weights_sha256")
    return f"sha256:{sha}" if isinstance(sha, str) and sha else ""


def load_embedder(model_dir: str | os.PathLike, torch_device=None) -> Embedder:
    """Load a model directory to embed packets.

    Parameters
    ----------
    model_dir : path-like
        Written by ``lora-rffi train`` (any objective).
    torch_device : torch.device or str, optional
        Where the network runs. None: CUDA when available, else CPU.
    """
    path = pathlib.Path(model_dir)
    model, config = load_model(path, torch_device=torch_device)
    return Embedder(model, config, path, _weights_fingerprint(path))
