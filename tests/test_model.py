from types import SimpleNamespace

import pytest
import torch

from orca_ray.bodies import load_body
from orca_ray.model import (
    DensePredictor,
    Embedder1D,
    Embedder2D,
    apply_freeze,
    build_model,
    parse_freeze,
    stride_for,
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
    assert tokens.shape == (2, length // stride, 16) and grid == (length // stride,)


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
            build_model(task, body)
        return
    model = build_model(task, body, target_seq_len={"synthetic-deepsea": 64}.get(task_name), seed=0)
    x = torch.from_numpy(task.train.x[:3])
    out = model(x)
    want = (3, *task.output_shape) if task.dense else (3, task.num_outputs)
    assert tuple(out.shape) == want
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.embedder.parameters())


def test_embedder_initialised_from_the_body(minilm):
    task = fake_task("1d", (6, 100), 4)
    model = build_model(task, minilm, seed=0)
    init = minilm.embedding_init
    assert torch.equal(model.embedder.norm.weight, init.norm_weight)
    assert torch.equal(model.embedder.positions, init.positions[: model.embedder.num_tokens])
    # the body's own word/position embeddings are bypassed: the model's output depends on the embedder only
    assert not any("word_embeddings" in n for n, _ in minilm.named_parameters())


def test_swin_embedder_copies_patch_kernel_over_channels():
    body = load_body("tiny-swin")
    rgb = build_model(fake_task("2d", (3, 32, 32), 5), body).embedder
    assert torch.equal(rgb.projection.weight, body.embedding_init.patch_weight)
    gray = build_model(fake_task("2d", (1, 16, 52), 5), body).embedder
    want = body.embedding_init.patch_weight.mean(1, keepdim=True) * 3
    assert torch.allclose(gray.projection.weight, want)
    tokens, grid = gray(torch.randn(2, 1, 16, 52))  # resized to the body's image size
    assert grid == (8, 8) and tokens.shape == (2, 64, body.embed_dim)


def test_dense_predictor_shapes_1d_and_2d():
    p2 = DensePredictor(8, 1, (85, 85), stride=4)
    assert p2(torch.randn(2, 16, 8), (4, 4)).shape == (2, 85, 85)
    p1 = DensePredictor(8, 3, (100,), stride=5)
    assert p1(torch.randn(2, 20, 8), (20,)).shape == (2, 3, 100)


def test_text_body_on_image_task_uses_learned_positions(minilm):
    model = build_model(fake_task("2d", (1, 8, 8), 10), minilm)
    assert isinstance(model.embedder, Embedder2D) and model.embedder.positions is not None
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
    model = build_model(task, load_body("tiny-text"), seed=0)
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
