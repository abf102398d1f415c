import copy
import math
from types import SimpleNamespace

import pytest
import torch

from orca_ray.bodies import load_body
from orca_ray.embedders import Embedder1D, Embedder2D, build_embedder, stride_for
from orca_ray.model import (
    DensePredictor,
    apply_freeze,
    build_model,
    parse_freeze,
    trainable_parameters,
)
from orca_ray.tasks import load_task


def fake_task(modality, input_shape, num_outputs, output_shape=None, name="t"):
    return SimpleNamespace(
        name=name,
        modality=modality,
        input_shape=input_shape,
        num_outputs=num_outputs,
        output_shape=output_shape,
        dense=output_shape is not None,
    )


@pytest.mark.parametrize(("length", "target", "stride"), [(46, 64, 1), (1000, 512, 2), (1000, 64, 20)])
def test_stride_rule_on_orcas_1d_tasks(length, target, stride):
    # Satellite, DeepSEA, ECG
    assert stride_for(length, target) == stride
    emb = Embedder1D(1, length, 16, target)
    tokens, grid = emb(torch.randn(2, 1, length))
    assert tokens.shape == (2, length // stride, 16)
    assert grid == (length // stride,)


# every NAS-Bench-360 task type (synthetic stand-ins with the real shapes) through a text and a Swin body
TASKS_1D = ["synthetic-satellite", "synthetic-deepsea", "synthetic-ecg"]
TASKS_2D = ["synthetic-cifar100", "synthetic-ninapro", "synthetic-darcy"]


@pytest.fixture(scope="module")
def tasks():
    return {n: load_task(n) for n in TASKS_1D + TASKS_2D}


@pytest.mark.parametrize("body_name", ["tiny-text", "tiny-swin", "tiny-timm-swin"])
@pytest.mark.parametrize("task_name", TASKS_1D + TASKS_2D)
def test_output_shapes(tasks, body_name, task_name):
    task = tasks[task_name]
    body = load_body(body_name)
    if task.modality == "1d" and body.modality == "2d":
        with pytest.raises(ValueError, match="needs a sequence"):
            build_model(task, body, aligned=True)
        return
    model = build_model(
        task, body, aligned=True, target_seq_len={"synthetic-deepsea": 64}.get(task_name), seed=0
    )
    x = torch.from_numpy(task.train.x[:3])
    out = model(x)
    want = (3, *task.output_shape) if task.dense else (3, task.num_outputs)
    assert tuple(out.shape) == want
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.embedder.parameters())


def test_embedder_initialised_from_the_body(minilm):
    task = fake_task("1d", (6, 100), 4)
    model = build_model(task, minilm, aligned=True, seed=0)
    init = minilm.embedding_init
    assert torch.equal(model.embedder.norm.weight, init.norm_weight)
    assert torch.equal(model.embedder.positions, init.positions[: model.embedder.num_tokens])
    # the body's own word/position embeddings are bypassed: the model's output depends on the embedder only
    assert not any("word_embeddings" in n for n, _ in minilm.named_parameters())


def test_aligned_swin_embedder_tiles_the_patch_kernel_as_orca():
    """ORCA's embedder_init: channel c of our conv is the body's channel c mod 3 (no averaging), bias and
    LayerNorm copied."""
    body = load_body("tiny-swin")
    w, init = body.embedding_init.patch_weight, body.embedding_init
    for channels, want in [(3, w), (1, w[:, :1]), (4, torch.cat([w, w[:, :1]], 1))]:
        emb = build_model(fake_task("2d", (channels, 16, 52), 5), body, aligned=True).embedder
        assert torch.equal(emb.projection.weight, want)
        assert torch.equal(emb.projection.bias, init.patch_bias)
        assert torch.equal(emb.norm.weight, init.norm_weight)
        assert torch.equal(emb.norm.bias, init.norm_bias)
    tokens, grid = emb(torch.randn(2, 4, 16, 52))  # resized to the body's image size
    assert grid == (8, 8)
    assert tokens.shape == (2, 64, body.embed_dim)


def test_unaligned_embedders_start_fresh_as_orca():
    """0 embedder epochs: 2D conv trunc-normal(0.02) with zero bias and LayerNorm 1/0; 1D LayerNorm 1/0 with
    the conv's Xavier init and the body's positions kept."""
    swin = load_body("tiny-swin")
    torch.manual_seed(0)
    emb = Embedder2D(3, 256, 224, 4)  # enough weights for the statistics
    emb.init_from_body(swin.embedding_init, aligned=False)
    w = emb.projection.weight.detach()
    assert abs(float(w.mean())) < 1e-3
    assert float(w.std()) == pytest.approx(0.02, rel=0.03)
    assert float(w.abs().max()) <= 2.0
    assert torch.equal(emb.projection.bias, torch.zeros(256))
    assert torch.equal(emb.norm.weight, torch.ones(256))
    assert torch.equal(emb.norm.bias, torch.zeros(256))

    text = load_body("tiny-text")
    task = fake_task("1d", (2, 40), 3)
    fresh = build_model(task, text, aligned=False, seed=0).embedder
    aligned = build_model(task, text, aligned=True, seed=0).embedder
    init = text.embedding_init
    assert torch.equal(fresh.norm.weight, torch.ones(32))
    assert torch.equal(fresh.norm.bias, torch.zeros(32))
    assert torch.equal(aligned.norm.weight, init.norm_weight)
    assert torch.equal(aligned.norm.bias, init.norm_bias)
    for emb in (fresh, aligned):
        assert torch.equal(emb.positions, init.positions[: emb.num_tokens])
    assert torch.equal(fresh.projection.weight, aligned.projection.weight)  # Xavier(√2) either way
    fan_in, fan_out = 2 * fresh.stride, 32 * fresh.stride
    bound = math.sqrt(2.0) * math.sqrt(6.0 / (fan_in + fan_out))
    assert float(fresh.projection.weight.detach().abs().max()) <= bound


def test_roberta_positions_are_numbered_from_two_as_orca():
    """ORCA's Embeddings1D takes position ids 2..L+1 (padding_idx 1) from RoBERTa's table."""
    import transformers

    from orca_ray.bodies import TextBody

    cfg = transformers.AutoConfig.for_model(
        "roberta",
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        vocab_size=50,
        pad_token_id=1,
    )
    hf = transformers.AutoModel.from_config(cfg)
    table = hf.embeddings.position_embeddings.weight.detach().clone()
    body = TextBody(hf, "roberta", None)
    emb = build_embedder(fake_task("1d", (1, 46), 24), body, aligned=False, target_seq_len=38)
    assert emb.num_tokens == 23
    assert torch.equal(emb.positions, table[2:25])
    assert body.max_tokens == 38


def test_swin_keeps_its_drop_path_rate():
    """ORCA sets hidden/attention dropout only; Swin's stochastic depth stays at SwinConfig's 0.1, on every
    block (ORCA's transformers did not decay it over depth)."""
    body = load_body("tiny-swin", dropout=0.0)
    cfg = body.model.config
    assert cfg.drop_path_rate == pytest.approx(0.1)
    rates = [b.drop_path.drop_prob for stage in body.model.encoder.layers for b in stage.blocks]
    assert rates == pytest.approx([0.1] * len(rates))
    assert len(rates) == 2
    assert cfg.hidden_dropout_prob == 0.0
    assert cfg.attention_probs_dropout_prob == 0.0
    timm_body = load_body("tiny-timm-swin")
    rates = [m.drop_prob for m in timm_body.modules() if type(m).__name__ == "DropPath"]
    assert rates
    assert max(rates) == pytest.approx(0.1)


def test_darcy_head_matches_transformers_masked_image_decoder():
    """ORCA's Darcy model: SwinForMaskedImageModeling's reconstruction, channel mean, adaptive pool to 85x85.
    Same weights in transformers' own model and in ours give the same field."""
    import transformers

    from orca_ray.bodies import HFSwinBody
    from orca_ray.model import ORCAModel, SwinDenseDecoder

    torch.manual_seed(0)
    cfg = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2
    )
    ref = transformers.SwinForMaskedImageModeling(cfg).eval()
    body = HFSwinBody(copy.deepcopy(ref.swin), "ref", None)
    assert body.decoder_stride == cfg.encoder_stride == 32
    task = fake_task("2d", (3, 32, 32), 1, output_shape=(85, 85))
    model = build_model(task, body, aligned=True, seed=0).eval()
    head = model.predictor
    assert isinstance(head, SwinDenseDecoder)
    assert isinstance(model, ORCAModel)
    # the body's own patch embedding (aligned init copies it) and the reference's decoder conv
    with torch.no_grad():
        head.conv.weight.copy_(ref.decoder[0].weight)
        head.conv.bias.copy_(ref.decoder[0].bias)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        recon = ref(pixel_values=x).reconstruction  # (2, 3, 128, 128): PixelShuffle(32) of the 4x4 grid
        want = torch.nn.functional.adaptive_avg_pool2d(recon.mean(1), (85, 85))
        got = model(x)
    assert got.shape == (2, 85, 85)
    assert torch.allclose(got, want, atol=1e-5)
    # fresh decoder: transformers' Swin init (normal 0.02, zero bias); gradients reach every part
    fresh = SwinDenseDecoder(64, 1, (85, 85), upscale=32)
    assert float(fresh.conv.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert not fresh.conv.bias.any()
    model.train()
    model(x).pow(2).mean().backward()
    for part in ("embedder", "body", "predictor"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.part(part).parameters()), part


def test_dense_predictor_shapes_1d_and_2d():
    p2 = DensePredictor(8, 1, (85, 85), stride=4)
    assert p2(torch.randn(2, 16, 8), (4, 4)).shape == (2, 85, 85)
    p1 = DensePredictor(8, 3, (100,), stride=5)
    assert p1(torch.randn(2, 20, 8), (20,)).shape == (2, 3, 100)


def test_text_body_on_image_task_uses_learned_positions(minilm):
    model = build_model(fake_task("2d", (1, 8, 8), 10), minilm, aligned=True)
    assert isinstance(model.embedder, Embedder2D)
    assert model.embedder.positions is not None
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_parse_freeze():
    assert parse_freeze("none") == frozenset()
    assert parse_freeze("body+embedder") == {"body", "embedder"}
    with pytest.raises(ValueError, match="unknown part"):
        parse_freeze("encoder")
    with pytest.raises(ValueError, match="nothing would train"):
        parse_freeze("embedder+body+predictor")


@pytest.mark.parametrize("frozen", [{"body"}, {"embedder"}, {"embedder", "body"}])
def test_frozen_weights_bit_identical_after_training(frozen):
    task = fake_task("1d", (2, 40), 3)
    model = build_model(task, load_body("tiny-text"), aligned=True, seed=0)
    apply_freeze(model, frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-2)
    assert not any(p.requires_grad for part in frozen for p in model.part(part).parameters())
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 2, 40)), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        if part in frozen:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
            assert p.grad is None
    for part in {"embedder", "body", "predictor"} - frozen:
        changed = [not torch.equal(p, before[f"{part}.{n}"]) for n, p in model.part(part).named_parameters()]
        assert any(changed), f"trainable {part} did not change"
