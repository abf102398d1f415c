"""Stage one's embedder kinds: same token grid for every kind, `linear` is one Linear on ORCA's patches,
the knock-outs lose exactly their part, alignment works through `linear`, the kind keys the snapshots."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from orca_ray.align import Aligner, AlignHParams
from orca_ray.bodies import load_body
from orca_ray.config import TrialConfig
from orca_ray.embedders import EMBEDDERS, Embedder1D, Embedder2D, LinearEmbedder, build_embedder
from orca_ray.model import build_model


def fake_task(modality, input_shape, num_outputs=3, output_shape=None):
    return SimpleNamespace(
        name="t",
        modality=modality,
        input_shape=input_shape,
        num_outputs=num_outputs,
        output_shape=output_shape,
        dense=output_shape is not None,
    )


CASES = [  # (task, body): 1D on a text body, 2D on a text body, 2D on a Swin body
    (fake_task("1d", (2, 60)), "tiny-text"),
    (fake_task("2d", (3, 13, 11)), "tiny-text"),
    (fake_task("2d", (1, 20, 20)), "tiny-swin"),
]


@pytest.mark.parametrize(("task", "body_name"), CASES)
def test_every_kind_gives_orcas_token_grid(task, body_name):
    body = load_body(body_name)
    x = torch.randn(4, *task.input_shape)
    ref_tokens, ref_grid = build_embedder(task, body, aligned=True, target_seq_len=16)(x)
    for kind in EMBEDDERS:
        emb = build_embedder(task, body, aligned=True, target_seq_len=16, kind=kind)
        tokens, grid = emb(x)
        assert grid == ref_grid, kind
        assert tokens.shape == ref_tokens.shape, kind
        p, q = emb.patching, build_embedder(task, body, aligned=False, target_seq_len=16).patching
        assert (p.patch, p.grid, p.image_size) == (q.patch, q.grid, q.image_size), kind


@pytest.mark.parametrize(("task", "body_name"), CASES)
def test_linear_is_one_linear_on_orcas_patches(task, body_name):
    """With ORCA's conv weights, `linear` computes ORCA's conv output per patch: the same patches, the same
    weight order; it has no LayerNorm and no positions (only the Linear's weight and bias)."""
    body = load_body(body_name)
    orca = build_embedder(task, body, aligned=True, target_seq_len=16)
    lin = build_embedder(task, body, aligned=True, target_seq_len=16, kind="linear")
    assert isinstance(lin, LinearEmbedder)
    assert [n for n, _ in lin.named_parameters()] == ["projection.weight", "projection.bias"]
    with torch.no_grad():
        lin.projection.weight.copy_(orca.projection.weight.flatten(1))
        lin.projection.bias.copy_(orca.projection.bias)
    x = torch.randn(3, *task.input_shape)
    if len(task.input_shape) == 3 and task.input_shape[1:] != (orca.image_size,) * 2:
        x_resized = torch.nn.functional.interpolate(x, size=(orca.image_size,) * 2, mode="bilinear")
    else:
        x_resized = x
    conv = orca.projection(x_resized).flatten(2).transpose(1, 2)
    torch.testing.assert_close(lin(x)[0], conv, rtol=1e-5, atol=1e-5)


def test_orca_is_unchanged_and_knockouts_drop_their_part():
    """`orca` draws exactly as Embedder1D/2D did (same seed → same weights); the knock-outs lack their part."""
    body = load_body("tiny-text")
    task = fake_task("1d", (1, 46))
    torch.manual_seed(0)
    direct = Embedder1D(1, 46, body.embed_dim, 64)
    direct.init_from_body(body.embedding_init, True)
    torch.manual_seed(0)
    built = build_embedder(task, body, aligned=True)
    for (n, a), (_, b) in zip(direct.state_dict().items(), built.state_dict().items()):
        assert torch.equal(a, b), n
    no_norm = build_embedder(task, body, aligned=True, kind="orca-no-norm")
    no_pos = build_embedder(task, body, aligned=True, kind="orca-no-pos")
    assert isinstance(no_norm.norm, torch.nn.Identity)
    assert no_norm.positions is not None
    assert no_pos.positions is None
    assert isinstance(no_pos.norm, torch.nn.LayerNorm)
    swin = build_embedder(
        fake_task("2d", (1, 20, 20)), load_body("tiny-swin"), aligned=True, kind="orca-no-pos"
    )
    assert isinstance(swin, Embedder2D)
    assert swin.positions is None  # Swin bodies have no positions of ours: orca-no-pos is orca there


def test_every_kind_trains_with_a_dense_predictor_on_a_2d_body():
    task = fake_task("2d", (1, 20, 20), num_outputs=1, output_shape=(20, 20))
    for kind in EMBEDDERS:
        model = build_model(task, load_body("tiny-swin"), aligned=False, seed=0, embedder=kind)
        out = model(torch.randn(2, 1, 20, 20))
        assert out.shape == (2, 20, 20)
        out.square().mean().backward()
        assert model.embedder.projection.weight.grad.abs().sum() > 0


def test_alignment_lowers_otdd_with_linear(tiny):
    task, body, px, py = tiny
    torch.manual_seed(0)
    emb = build_embedder(task, copy.deepcopy(body), aligned=True, kind="linear")
    aligner = Aligner(emb, task, px, py, AlignHParams(lr=1e-2, batch_per_class=16), seed=0, device="cpu")
    otdd = aligner.run(3)
    assert np.isfinite(otdd).all()
    assert otdd[-1] < otdd[0], otdd


def test_kind_is_checked_and_keys_the_snapshots_but_default_hashes_stay():
    with pytest.raises(ValueError, match="unknown embedder kind 'conv'; known: orca"):
        TrialConfig(task="digits", body="minilm", embedder="conv")
    base = TrialConfig(task="digits", body="minilm", embedder_epochs=3)
    # the default config's hashes from before the field existed (existing sweeps resume, snapshots reused)
    assert (
        base.config_hash
        == TrialConfig(task="digits", body="minilm", embedder_epochs=3, embedder="orca").config_hash
    )
    assert TrialConfig(task="digits", body="minilm").config_hash == "71f7abfd007b015c"
    assert TrialConfig(task="digits", body="minilm").align_key == "5597439696d6d397"
    linear = TrialConfig(task="digits", body="minilm", embedder_epochs=3, embedder="linear")
    assert linear.align_key != base.align_key
    assert linear.config_hash != base.config_hash
    assert "-linear-" in linear.short_name()
