"""LoRA as a limit on what fine-tuning changes: peft adapters found by name in every body family, base weights
bit-identical after refine, trainable_params = what changed, and the bad inputs refused before Ray."""

import copy
import runpy
import sys
from pathlib import Path

import pytest
import torch
import transformers as T
from torch import nn

from orca_ray.bodies import load_body
from orca_ray.config import TrialConfig
from orca_ray.lora import (
    LoRATargetError,
    apply_lora,
    base_name,
    is_lora_parameter,
    lora_targets,
    max_lora_rank,
)
from orca_ray.trainable import TrialRun

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def tiny_families():
    """Small random models of the families DESIGN §4 names (never the 20B GPT-NeoX defaults)."""
    return {
        "gpt2": T.GPT2Model(T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=64)),
        "gpt-neox": T.GPTNeoXModel(
            T.GPTNeoXConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                vocab_size=64,
            )
        ),
        "t5": T.T5Model(T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, vocab_size=64)),
        "bart": T.BartModel(
            T.BartConfig(
                d_model=32,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                vocab_size=64,
            )
        ),
        "text": load_body("tiny-text"),
        "hf-swin": load_body("tiny-swin"),
        "timm-swin": load_body("tiny-timm-swin"),
    }


EXPECTED = {
    "gpt2": ("c_attn",),
    "gpt-neox": ("query_key_value",),
    "t5": ("q", "v"),
    "bart": ("q_proj", "v_proj"),
    "text": ("query", "value"),
    "timm-swin": ("qkv",),
}


def test_every_family_gets_adapters_and_only_they_train():
    for family, model in tiny_families().items():
        names = lora_targets(model)
        if family in EXPECTED:
            assert names == EXPECTED[family], family
        targeted = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names]
        # LoRA adds r·(fan_in + fan_out) per targeted layer (GPT-2's Conv1D stores its weight transposed)
        expected = sum(2 * sum(m.weight.shape) for m in targeted)
        apply_lora(model, rank=2, alpha=4.0, dropout=0.0, seed=0)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert trainable, family
        assert all(is_lora_parameter(n) for n in trainable), family
        assert sum(p.numel() for p in trainable.values()) == expected, family


def test_minilm_r4_adapts_query_and_value(minilm):
    body = copy.deepcopy(minilm)
    apply_lora(body, rank=4, alpha=16.0, dropout=0.0, seed=0)
    assert (
        sum(p.numel() for p in body.parameters() if p.requires_grad) == 36_864
    )  # 6 layers × 2 × 4·(384+384)


def test_adapters_start_as_the_identity_and_are_seeded():
    body = load_body("tiny-text")
    tokens = torch.randn(2, 8, body.embed_dim)
    before = body.eval()(tokens, (8,))[0]
    a, b = copy.deepcopy(body), copy.deepcopy(body)
    apply_lora(a, rank=2, alpha=4.0, dropout=0.0, seed=1)
    apply_lora(b, rank=2, alpha=4.0, dropout=0.0, seed=1)
    assert torch.equal(a.eval()(tokens, (8,))[0], before)  # LoRA's B starts at zero
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_no_target_and_absurd_rank_are_refused():
    with pytest.raises(LoRATargetError, match="no attention layers LoRA can target"):
        lora_targets(nn.Sequential(nn.Conv1d(1, 4, 3)))
    body = load_body("tiny-text")
    assert max_lora_rank(body) == 32
    with pytest.raises(ValueError, match=r"lora_rank must be in 1\.\.32"):
        apply_lora(body, rank=33, alpha=1.0, dropout=0.0, seed=0)
    with pytest.raises(ValueError, match="drop 'body' from the freeze mask or set lora_rank 0"):
        TrialConfig(task="digits", body="minilm", lora_rank=4, freeze="body")
    with pytest.raises(ValueError, match="lora_rank must be >= 0"):
        TrialConfig(task="digits", body="minilm", lora_rank=-1)


def _cli(capsys, monkeypatch, script, *argv):
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(SWEEPS / script), run_name="__main__")
    return e.value.code, capsys.readouterr().err.strip().splitlines()


def test_bad_sweep_flags_exit_2_with_one_line_and_write_nothing(capsys, monkeypatch, tmp_path):
    store = tmp_path / "store"
    common = ["--storage", str(store), "--tasks", "synthetic-satellite"]
    code, err = _cli(capsys, monkeypatch, "lora_rank.py", *common, "--body", "tiny-text", "--ranks", "33")
    assert code == 2
    assert len(err) == 2  # one line per body: the pretrained one and its random init
    assert all(line.startswith("error: --lora-rank / --ranks: rank 33 exceeds 32") for line in err)
    code, err = _cli(capsys, monkeypatch, "lora_rank.py", *common, "--ranks", "0")
    assert code == 2
    assert "--ranks: must be >= 1" in err[0]
    code, err = _cli(capsys, monkeypatch, "stage_one.py", *common, "--embedders", "conv")
    assert code == 2
    assert "--embedders: invalid choice: 'conv'" in err[0]
    assert not store.exists()


@pytest.mark.parametrize(("freeze", "rank"), [("none", 2), ("body", 0)])
def test_refine_changes_exactly_the_trainable_params(freeze, rank, tmp_path):
    """After refine: every base body weight bit-identical (LoRA, frozen body), the adapters changed, and the
    number of parameter values that changed is the trial's trainable_params."""
    cfg = TrialConfig(
        task="synthetic-satellite",
        body="tiny-text",
        proxy="none",
        freeze=freeze,
        lora_rank=rank,
        refine_epochs=2,
        batch_size=32,
        weight_decay=0.01,
        target_seq_len=64,  # the tiny body's 128 positions (Satellite's recipe asks for 512)
        max_train_samples=128,
        max_eval_samples=64,
        cache_dir=str(tmp_path),
    )
    run = TrialRun(cfg)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    rows = []
    run.run(lambda row, state: rows.append(row))
    after = dict(run.model.named_parameters())
    changed = sum(int((after[n] != v).sum()) for n, v in before.items())
    assert rows[-1]["trainable_params"] == changed
    assert {r["trainable_params"] for r in rows} == {changed}
    body_base = {n: v for n, v in before.items() if n.startswith("body.") and not is_lora_parameter(n)}
    assert body_base
    for n, v in body_base.items():
        assert torch.equal(after[n], v), base_name(n)
    adapters = [n for n in before if is_lora_parameter(n)]
    assert bool(adapters) == bool(rank)
    for n in adapters:
        assert not torch.equal(after[n], before[n]), n
