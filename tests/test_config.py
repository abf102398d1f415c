import pytest

from orca_ray.config import TrialConfig


def test_hash_is_stable_and_ignores_locations():
    a = TrialConfig(task="osuleaf", body="minilm", embedder_epochs=4, seed=1)
    b = TrialConfig(task="osuleaf", body="minilm", embedder_epochs=4, seed=1, data_root="/x", cache_dir="/y")
    assert a.config_hash == b.config_hash
    assert len(a.config_hash) == 16
    assert a.config_hash != TrialConfig(task="osuleaf", body="minilm", embedder_epochs=4, seed=2).config_hash
    assert TrialConfig.from_dict(a.to_dict()) == a


def test_align_key_shared_by_trials_that_only_differ_in_fine_tuning():
    base = TrialConfig(task="osuleaf", body="minilm", proxy="wnut16", embedder_epochs=4)
    same = [
        TrialConfig(task="osuleaf", body="minilm", proxy="wnut16", embedder_epochs=e, freeze=f, batch_size=b)
        for e, f, b in [(8, "none", None), (4, "body", 4), (0, "embedder+body", None)]
    ]
    assert {c.align_key for c in same} == {base.align_key}
    # but not across seeds, proxies or bodies (ORCA's path omitted these and trials collided)
    # and the align optimiser is derived from the fine-tuning one (lr ×10), so lr and optimiser change it too
    for other in [
        {"seed": 1},
        {"proxy": "fake-text"},
        {"body": "random:minilm"},
        {"lr": 1e-3},
        {"optimizer": "sgd"},
        {"align_lr": 1e-2},
        {"protocol": "orca"},  # ORCA's composition aligns on train ∪ val
    ]:
        assert TrialConfig(**{**base.to_dict(), **other}).align_key != base.align_key
    assert len({c.config_hash for c in [base, *same]}) == 4


def test_validation_errors():
    with pytest.raises(ValueError, match="unknown trial config field"):
        TrialConfig.from_dict({"task": "t", "body": "b", "epochs": 3})
    with pytest.raises(ValueError, match="preset"):
        TrialConfig(task="t", body="b", preset="full")
    with pytest.raises(ValueError, match="no embedder training"):
        TrialConfig(task="t", body="b", proxy="none", embedder_epochs=3)
    with pytest.raises(ValueError, match="unknown part"):
        TrialConfig(task="t", body="b", freeze="head")
    assert TrialConfig(task="t", body="b", freeze="body+embedder").freeze == "embedder+body"
    with pytest.raises(ValueError, match="protocol"):
        TrialConfig(task="t", body="b", protocol="paper")
    assert TrialConfig(task="t", body="b").protocol == "honest"


def test_align_key_hashes_the_resolved_proxy():
    """ "auto" and the proxy it stands for share one aligned trajectory (snapshots), not two."""
    auto = TrialConfig(task="osuleaf", body="minilm", proxy="auto", embedder_epochs=4)
    named = TrialConfig(task="osuleaf", body="minilm", proxy="wnut16", embedder_epochs=4)
    assert auto.align_key == named.align_key
    assert auto.config_hash != named.config_hash  # still two trials
    other = TrialConfig(task="osuleaf", body="minilm", proxy="fake-text", embedder_epochs=4)
    assert other.align_key != auto.align_key
    # the paper preset's "auto" is another proxy (CoNLL) and another trajectory
    assert TrialConfig(**{**auto.to_dict(), "preset": "paper"}).align_key != auto.align_key
