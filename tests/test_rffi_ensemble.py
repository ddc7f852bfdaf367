"""Extractors made of several training runs (``TrainConfig(members=N)``, ``lora-rffi train --members N``): the
joined embedding against its definition, training and resuming the members, what is refused, and every path
a model directory takes (enrollment, classification, ONNX)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from support import one_error_line
from torch.nn import functional as F

from lorarffi.cli import main
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi import metric
from lorarffi.rffi.checkpoint import load_model, read_config
from lorarffi.rffi.embedding import load_embedder
from lorarffi.rffi.ensemble import MEMBERS_DIR, combine_members, member_config, member_dir
from lorarffi.rffi.inference import load_classifier
from lorarffi.rffi.models import build_model
from lorarffi.rffi.models.ensemble import ENSEMBLE_MODEL
from lorarffi.rffi.recipe import EXTRACTOR_MEMBERS
from lorarffi.rffi.train import TrainConfig, has_train_state, train
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()
U = 2.0**-24  # float32 unit roundoff
DIM = 16
TC = TrainConfig(
    model="rffi_net",
    objective="triplet",
    embedding_dim=DIM,
    epochs=1,
    batch_size=16,
    lr=3e-3,
    seed=4,
    augment=(),
    max_time_s=None,
    members=2,
)


@pytest.fixture(scope="module")
def sets():
    fleet = make_fleet(4, seed=11, spread=5.0)
    return tuple(
        simulate_preamble_set(
            fleet, CFG, n, session=Session(day=1, minutes_since_power_on=m, place=1),
            rng=np.random.default_rng(m), snr_db=(20, 30),
        )
        for n, m in ((20, 20), (6, 40))
    )


@pytest.fixture(scope="module")
def ensemble(sets, tmp_path_factory):
    torch.set_num_threads(1)
    tr, _ = sets
    out = tmp_path_factory.mktemp("ensemble")
    return out, train(tr.preambles, tr.device_ids, CFG, out, TC)


def _rounding_bound(model: torch.nn.Module) -> float:
    """How far two float32 evaluations of a unit embedding may differ: each within n u of the exact one (n =
    the layers' fan-ins plus one rounding per module), normalisation keeping that relative size, so twice
    it."""
    n = sum(m.weight[0].numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return 2 * (n + sum(1 for _ in model.modules())) * U


def test_the_joined_embedding_is_the_members_side_by_side() -> None:
    torch.manual_seed(0)
    name, hp = metric.network_spec(
        "rffi_net", {"input_shape": [102, 62], "in_channels": 1, "n_classes": 3}, "supcon", DIM
    )
    model = build_model(ENSEMBLE_MODEL, member=name, member_hparams=hp, n_members=3).eval()
    assert (model.embedding_dim, model.penultimate_dim, model.member_dim) == (3 * DIM, 3 * DIM, DIM)
    for m in model.members:  # trained-looking heads, each its own
        m.set_centroids(torch.randn(3, DIM), logit_scale=float(torch.rand(()) * 10 + 1))
    x = torch.randn(5, 1, 102, 62)
    with torch.no_grad():
        got = model.embed(x).double()
        parts = [F.normalize(m.penultimate(x), dim=1).double() for m in model.members]
        logits = model(x).double()
        member_logits = torch.stack([m(x).double() for m in model.members])
    # the same float32 operations, then one division by sqrt(3): within a few roundings of each value
    np.testing.assert_allclose(got, torch.cat(parts, 1) / np.sqrt(3), rtol=0, atol=4 * U)
    np.testing.assert_allclose(got.norm(dim=1), 1.0, rtol=0, atol=(3 * DIM + 4) * U)
    # squared distances: the mean of the members' (sums of 3*DIM float32 products, each within a few u)
    d2 = torch.cdist(got, got) ** 2
    want = torch.stack([torch.cdist(p, p) ** 2 for p in parts]).mean(0)
    np.testing.assert_allclose(d2, want, rtol=0, atol=8 * (3 * DIM + 4) * U)
    np.testing.assert_allclose(
        logits, member_logits.mean(0), rtol=0, atol=4 * U * float(member_logits.abs().max())
    )
    with pytest.raises(ConfigError, match="at least 2 members"):
        build_model(ENSEMBLE_MODEL, member=name, member_hparams=hp, n_members=1)
    with pytest.raises(ConfigError, match="cannot be ensembles"):
        build_model(ENSEMBLE_MODEL, member=ENSEMBLE_MODEL, member_hparams={}, n_members=2)


def test_members_train_with_their_own_seeds_and_embed_as_one_model(ensemble, sets) -> None:
    out, result = ensemble
    _, te = sets
    config = read_config(out)
    assert config.model_name == ENSEMBLE_MODEL and config.model_hparams["n_members"] == 2
    assert (config.training["members"], config.training["seed"]) == (2, TC.seed)
    assert [r["seed"] for r in config.training["member_runs"]] == [TC.seed, TC.seed + 1]
    members = [read_config(member_dir(out, i)) for i in range(2)]
    assert [(c.training["members"], c.training["seed"]) for c in members] == [(1, TC.seed), (1, TC.seed + 1)]
    assert sorted(p.name for p in (out / MEMBERS_DIR).iterdir()) == ["0", "1"]
    assert len(result.members) == 2 and result.best_epoch is None
    assert [h["member"] for h in result.history] == [0, 1]  # one epoch each
    assert result.best_val_loss == pytest.approx(np.mean([m.best_val_loss for m in result.members]))
    # the joined weights are the members' weights
    model, _ = load_model(out, torch_device="cpu")
    for i, slot in enumerate(model.members):
        member, _ = load_model(member_dir(out, i), torch_device="cpu")
        for k, v in member.state_dict().items():
            assert torch.equal(slot.state_dict()[k], v), k
    assert not torch.equal(model.members[0].dense.weight, model.members[1].dense.weight)  # other seeds
    # its embedding: the members' embeddings side by side over sqrt(2), from the same preprocessing
    emb = load_embedder(out, torch_device="cpu")
    assert (emb.dim, emb.objective) == (2 * DIM, "triplet")
    weights = (out / "weights.safetensors").read_bytes()
    assert emb.fingerprint == "sha256:" + hashlib.sha256(weights).hexdigest()
    pre = emb.preprocess(te.preambles)
    got = emb.embed(pre.iq)
    parts = [load_embedder(member_dir(out, i), torch_device="cpu").embed(pre.iq) for i in range(2)]
    bound = _rounding_bound(model.members[0])
    np.testing.assert_allclose(got, np.hstack(parts) / np.sqrt(2), rtol=0, atol=bound)
    # its classifier: the mean of the members' nearest-centroid logits, with the training devices' CFO gate
    clf = load_classifier(out, torch_device="cpu")
    dec = clf.classify(pre.iq, pre.cfo_hz, track=False)
    with torch.no_grad():
        x = torch.from_numpy(emb.features(pre.iq))
        logits = torch.stack([m(x) for m in model.members]).mean(0)
    top2 = torch.topk(logits, 2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]).numpy() > 8 * bound * float(logits.abs().max())
    want = np.asarray(clf.device_ids)[logits.argmax(1).numpy()]
    assert np.array_equal(dec.cnn_device_id[clear], want[clear]) and clear.mean() > 0.5
    assert config.hybrid == members[0].hybrid


def test_an_ensemble_resumes_each_member(ensemble, sets, tmp_path) -> None:
    out, _ = ensemble
    tr, _ = sets
    import shutil

    work = tmp_path / "m"
    shutil.copytree(out, work)
    assert has_train_state(work) and not has_train_state(tmp_path / "none")
    longer = TrainConfig(**{**TC.__dict__, "epochs": 2})
    result = train(tr.preambles, tr.device_ids, CFG, work, longer, resume=True)
    assert [[h["epoch"] for h in m.history] for m in result.members] == [[1, 2], [1, 2]]
    assert read_config(work).training["epochs"] == 2
    # interrupted in member 1: member 0 ended and is kept as it is, member 1 continues
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    for f in (cut / "config.json", cut / "weights.safetensors", member_dir(cut, 1) / "member_done.json"):
        f.unlink()
    kept = (member_dir(cut, 0) / "weights.safetensors").read_bytes()
    result = train(tr.preambles, tr.device_ids, CFG, cut, longer, resume=True)
    assert [[h["epoch"] for h in m.history] for m in result.members] == [[1], [1, 2]]
    assert result.members[0].stopped == "epochs"
    assert (member_dir(cut, 0) / "weights.safetensors").read_bytes() == kept
    assert read_config(cut).model_name == ENSEMBLE_MODEL


def test_members_that_do_not_fit_together_are_refused(ensemble, sets, tmp_path) -> None:
    out, _ = ensemble
    tr, _ = sets
    with pytest.raises(ModelError, match="at least two"):
        combine_members([member_dir(out, 0)], tmp_path / "one")
    keep = tr.device_ids != tr.device_ids.max()  # trained on three of the four devices
    train(tr.preambles[keep], tr.device_ids[keep], CFG, tmp_path / "three", member_config(TC, 0))
    with pytest.raises(ModelError, match="device_ids"):
        combine_members([member_dir(out, 0), tmp_path / "three"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_members_of_the_recipe_and_what_is_refused(sets, tmp_path, capsys) -> None:
    assert TrainConfig(objective="supcon").members == EXTRACTOR_MEMBERS
    assert TrainConfig().members == 1 == TrainConfig(objective="supcon", members=1).members
    assert member_config(TC, 1).seed == TC.seed + 1 and member_config(TC, 1).members == 1
    with pytest.raises(ConfigError, match="members=2 is not valid with objective='softmax'"):
        TrainConfig(members=2)
    with pytest.raises(ConfigError, match="members=0 is not valid"):
        TrainConfig(objective="supcon", members=0)
    data = tmp_path / "d.h5"
    assert main(["-q", "simulate", "--n-devices", "2", "--packets", "4", "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["-q", "train", str(data), "--out", str(tmp_path / "m"), "--members", "2"]) == 2
    one_error_line(capsys, "members=2 is not valid with objective='softmax'")


def test_the_train_command_reports_every_member_and_onnx_exports_the_ensemble(sets, tmp_path, capsys) -> None:
    ort = pytest.importorskip("onnxruntime")
    from lorarffi.rffi.onnx_export import export_onnx

    data = tmp_path / "d.h5"
    assert main(["-q", "simulate", "--n-devices", "3", "--packets", "12", "--out", str(data)]) == 0
    out = tmp_path / "m"
    args = ["-q", "train", str(data), "--out", str(out), "--model", "rffi_net", "--objective", "supcon"]
    args += ["--epochs", "1", "--batch-size", "12", "--embedding-dim", str(DIM), "--threads", "1"]
    capsys.readouterr()
    assert main([*args, "--no-progress", "--seed", "7"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [m["model_dir"] for m in summary["members"]] == [str(member_dir(out, i)) for i in range(2)]
    assert summary["best_epoch"] is None and "best_epoch" in summary["null_reasons"]
    assert [read_config(member_dir(out, i)).training["seed"] for i in range(2)] == [7, 8]
    path = export_onnx(out)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model, config = load_model(out, torch_device="cpu")
    hp = config.model_hparams["member_hparams"]
    x = np.random.default_rng(0).normal(size=(3, hp["in_channels"], *hp["input_shape"])).astype(np.float32)
    got = sess.run(["logits"], {"features": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    n_terms = sum(m.weight[0].numel() for m in layers) + sum(1 for _ in model.modules())
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * n_terms * U * np.abs(want).max())
