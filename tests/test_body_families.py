"""Decoder-only and encoder-decoder bodies: tiny random configs of each family through the real model code."""

import pytest
import torch

from orca_ray.bodies import (
    PYTHIA_TOKENS_PER_STEP,
    QUERY_TOKENS,
    BodyNotFoundError,
    load_body,
    parse_body_name,
    pretraining_tokens,
)
from orca_ray.model import apply_freeze, build_model

TINY = ["tiny-gpt2", "tiny-pythia", "tiny-t5-encoder", "tiny-t5", "tiny-bart-encoder", "tiny-bart"]
FAMILY = {"gpt2": "gpt2", "pythia": "pythia", "t5": "t5", "bart": "bart"}


@pytest.fixture(scope="module")
def task():
    from orca_ray.tasks import load_task

    return load_task("synthetic-satellite", seed=0, n_train=64)


@pytest.mark.parametrize("name", TINY)
def test_embedded_tokens_through_each_family_train_the_embedder(task, name):
    body = load_body(name)
    assert body.family == FAMILY[name.split("-")[1]]
    model = build_model(task, body, aligned=True, target_seq_len=16, seed=0)
    apply_freeze(model, {"body"})  # the body frozen: the embedder's gradient can only come through it
    x = torch.from_numpy(task.splits()["train"].x[:4]).float()
    tokens, grid = model.embedder(x)
    out, out_grid = body(tokens, grid)
    whole = name in ("tiny-t5", "tiny-bart")
    n = QUERY_TOKENS if whole else tokens.shape[1]
    assert out.shape == (4, n, body.out_dim)
    assert out_grid == (n,)
    model(x).square().sum().backward()
    grad = model.embedder.projection.weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0
    assert all(p.grad is None for p in model.body.parameters())


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-pythia"])
def test_decoder_output_at_t_ignores_inputs_after_t(name):
    body = load_body(name).eval()
    x = torch.randn(2, 12, body.embed_dim)
    y = x.clone()
    y[:, 7:] = torch.randn(2, 5, body.embed_dim)
    with torch.no_grad():
        a, _ = body(x, (12,))
        b, _ = body(y, (12,))
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_an_encoder_stack_sees_the_whole_input():
    """The contrast to the causality test: T5's encoder stack changes early outputs when late inputs change."""
    body = load_body("tiny-t5-encoder").eval()
    x = torch.randn(2, 12, body.embed_dim)
    y = x.clone()
    y[:, 7:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(body(x, (12,))[0][:, :7], body(y, (12,))[0][:, :7])


def test_random_init_of_each_published_config_works_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pythia = load_body("random:pythia-70m")
    assert (pythia.embed_dim, len(pythia.model.layers), pythia.max_tokens) == (512, 6, 2048)
    assert pythia.model.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert torch.equal(pythia.embedding_init.positions, torch.zeros(2048, 512))  # rotary: no table to copy
    gpt2 = load_body("random:distilgpt2")
    assert (gpt2.embed_dim, len(gpt2.model.h), gpt2.max_tokens) == (768, 6, 1024)
    assert gpt2.embedding_init.positions.shape == (1024, 768)  # wpe moved into the embedder's init
    assert torch.equal(gpt2.embedding_init.norm_weight, torch.ones(768))  # no embedding LayerNorm
    t5 = load_body("random:t5-small-encoder")
    assert (t5.embed_dim, len(t5.model.encoder.block), t5.model.decoder) == (512, 6, None)
    bart = load_body("random:bart-base", seed=1)
    assert (bart.embed_dim, len(bart.model.decoder.layers), bart.pretraining_tokens) == (768, 6, 0.0)
    assert bart.queries.shape == (QUERY_TOKENS, 768)


def test_step_revisions_give_pythia_tokens_and_bad_ones_fail():
    assert pretraining_tokens("pythia-160m@step1000") == 1000 * PYTHIA_TOKENS_PER_STEP == 2_097_152_000
    assert pretraining_tokens("pythia-410m@step0") == 0.0
    assert pretraining_tokens("pythia-70m") == 143_000 * PYTHIA_TOKENS_PER_STEP
    assert parse_body_name("pythia-160m@step1000").revision == "step1000"
    assert parse_body_name("t5-base-encoder").use == "encoder"
    assert parse_body_name("encoder:google/flan-t5-large").use == "encoder"
    with pytest.raises(ValueError, match=r"malformed revision 'stepx'.*@stepN"):
        parse_body_name("pythia-160m@stepx")


def test_a_revision_missing_offline_names_the_fetch_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BodyNotFoundError, match=r"hf download EleutherAI/pythia-160m --revision step1000"):
        load_body("pythia-160m@step1000")


def test_text_proxy_goes_through_the_familys_own_embedding_layer():
    """The proxy's input layer is the same seeded draw the body was built from (its position table is the one
    the embedder starts from), and WNUT-16 words reach it through the hashing fallback of random bodies."""
    from orca_ray.proxies import _original_text_embeddings, proxy_features

    gpt2 = load_body("tiny-gpt2", seed=3)
    emb, tokenizer, max_len = _original_text_embeddings(gpt2)
    assert tokenizer is None
    assert max_len == 128
    assert torch.equal(emb.positions.weight, gpt2.embedding_init.positions)
    bart = load_body("tiny-bart", seed=3)
    emb, _, _ = _original_text_embeddings(bart)
    assert torch.equal(emb.encoder.embed_positions.weight[2:], bart.embedding_init.positions)
    ids = torch.tensor([[5, 9, 11]])
    expected = torch.nn.functional.layer_norm(
        emb.encoder.embed_tokens.weight[ids] + emb.encoder.embed_positions.weight[2:5],
        (32,),
        bart.embedding_init.norm_weight,
        bart.embedding_init.norm_bias,
    )
    torch.testing.assert_close(emb(ids), expected)
    x, y = proxy_features("wnut16", "tiny-t5", load_body("tiny-t5"), size=60, seed=0)
    assert x.shape == (60, 32)
    assert torch.isfinite(x).all()
    assert len(y.unique()) > 1


def test_pool_last_reads_only_the_last_token():
    from orca_ray.model import PointPredictor

    head = PointPredictor(8, 3, pool="last")
    t = torch.randn(2, 5, 8)
    u = t.clone()
    u[:, :4] = 0
    torch.testing.assert_close(head(t, (5,)), head(u, (5,)))
    mean = PointPredictor(8, 3)
    mean.load_state_dict(head.state_dict())
    assert not torch.allclose(mean(t, (5,)), mean(u, (5,)))


def test_pool_enters_the_trial_hash_only_when_set():
    from orca_ray.config import TrialConfig

    base = TrialConfig(task="synthetic-satellite", body="tiny-gpt2")
    # the hash this config had before the pool field existed (main at e3b668b)
    assert base.config_hash == "366f040d2a7bee3f"
    assert (
        TrialConfig(task="synthetic-satellite", body="tiny-gpt2", pool="last").config_hash != base.config_hash
    )
    with pytest.raises(ValueError, match="pool must be one of"):
        TrialConfig(task="synthetic-satellite", body="tiny-gpt2", pool="max")


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "sweeps" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(script: str, argv: list[str]) -> int:
    from orca_ray.sweep.cli import main

    mod = _script(script)
    return main(
        default_name=script,
        description="",
        space=mod.space,
        add_args=mod.add_args,
        argv=argv,
        default_tasks={"demo": getattr(mod, "DEMO_TASKS", None) or [], "paper": mod.PAPER_TASKS},
    )


def test_paper_dry_run_lists_the_grid_with_a_gpu_hour_estimate(capsys):
    assert _run("body_families", ["--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "108 trials" in out  # 3 tasks x 6 bodies x {0, N} embedder epochs x 3 seeds
    for body in ("roberta-base", "gpt2", "pythia-160m", "t5-base-encoder", "t5-base", "bart-base"):
        assert f" {body} " in out
    assert "GPU-hours" in out


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("pretraining_scale", ["--tasks", "digits", "--bodies", "tiny-gpt2"], "takes 1D tasks only"),
        ("body_families", ["--bodies", "pythia-160m@stepx"], "malformed revision 'stepx'"),
        ("body_families", ["--bodies", "gpt2"], "hf download openai-community/gpt2"),
        ("body_families", ["--bodies", "VIT"], "no body family takes"),
    ],
)
def test_bad_bodies_are_one_line_preflight_errors(tmp_path, monkeypatch, capsys, script, flags, message):
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vit = tmp_path / "vit"
    transformers.ViTConfig().save_pretrained(vit)
    flags = [str(vit) if f == "VIT" else f for f in flags]
    store = tmp_path / "store"
    assert _run(script, [*flags, "--storage", str(store), "--seeds", "0", "--no-baselines"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
    assert not store.exists()


@pytest.mark.slow
def test_a_real_sweep_with_three_body_families_writes_parquet(ray_local, tmp_path, tiny_sweep_space):
    from orca_ray.results import read_results
    from orca_ray.sweep import SweepSpec, expand_grid
    from orca_ray.sweep.runner import run_sweep

    bodies = ["tiny-text", "tiny-gpt2", "tiny-t5"]  # three families: encoder, decoder, encoder-decoder
    grid = {**tiny_sweep_space, "body": bodies, "embedder_epochs": 2, "pool": "last"}
    spec = SweepSpec(name="families", space=grid, storage=str(tmp_path / "store"), analysis=False)
    configs = expand_grid(spec.space)
    assert not run_sweep(spec).errors
    df = read_results(spec.results_root)
    assert set(df["config_hash"]) == {c.config_hash for c in configs}
    assert set(zip(df["body"], df["body_family"])) == {
        ("tiny-text", "encoder"),
        ("tiny-gpt2", "gpt2"),
        ("tiny-t5", "t5"),
    }
    assert set(df["pool"]) == {"last"}
    refine = df[df.phase == "refine"]
    assert len(refine) == 3 * tiny_sweep_space["refine_epochs"]
    assert refine[["train_loss", "val_score", "test_score"]].notna().all().all()
    assert df[df.phase == "align"]["otdd"].notna().all()
