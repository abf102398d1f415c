import gzip
import pickle

import numpy as np
import pytest
import torch

from orca_ray.bodies import load_body
from orca_ray.proxies import CONLL_CLASSES, ProxyDataError, proxy_features, resolve_proxy


@pytest.fixture(scope="module")
def swin():
    return load_body("tiny-swin")


def test_resolve_follows_the_body_modality():
    assert resolve_proxy("auto", "minilm", "demo") == "wnut16"
    assert resolve_proxy("auto", "roberta-base", "paper") == "conll"
    assert resolve_proxy("auto", "swin-base", "paper") == "cifar10"
    assert resolve_proxy("auto", "tiny-swin", "demo") == "digits"
    with pytest.raises(ValueError, match="does not fit body 'minilm'"):
        resolve_proxy("cifar10", "minilm", "demo")
    with pytest.raises(ValueError, match="unknown proxy"):
        resolve_proxy("imagenet", "minilm", "demo")


def test_image_proxies_go_through_the_bodys_patch_embedding(swin, tmp_path):
    x, y = proxy_features("digits", "tiny-swin", swin, size=100, cache_dir=tmp_path)
    assert x.shape == (100, swin.embed_dim)
    assert y.dtype == torch.int64
    assert len(y.unique()) == 10
    # by hand: resize to the body's image size, its own conv + LayerNorm, mean over tokens
    from sklearn.datasets import load_digits

    img = torch.from_numpy((load_digits().images[:1].astype(np.float32) / 16 - 0.5) / 0.5)[:, None].repeat(
        1, 3, 1, 1
    )
    img = torch.nn.functional.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    init = swin.embedding_init
    t = (
        torch.nn.functional.conv2d(img, init.patch_weight, init.patch_bias, stride=4)
        .flatten(2)
        .transpose(1, 2)
    )
    t = torch.nn.functional.layer_norm(t, (t.shape[-1],), init.norm_weight, init.norm_bias)
    assert torch.allclose(x[0], t.mean(1)[0], atol=1e-5)


def test_features_are_cached_by_proxy_body_size_seed(swin, tmp_path):
    a = proxy_features("fake-images", "tiny-swin", swin, size=64, seed=0, cache_dir=tmp_path)
    files = list((tmp_path / "proxies").glob("*.safetensors"))
    assert len(files) == 1
    b = proxy_features("fake-images", "tiny-swin", swin, size=64, seed=0, cache_dir=tmp_path)
    assert torch.equal(a[0], b[0])
    c = proxy_features("fake-images", "tiny-swin", swin, size=64, seed=1, cache_dir=tmp_path)
    assert not torch.equal(a[0], c[0])
    assert len(list((tmp_path / "proxies").glob("*.safetensors"))) == 2


def test_wnut16_is_real_labelled_text(minilm, tmp_path):
    x, y = proxy_features("wnut16", "minilm", minilm, size=500, cache_dir=tmp_path)
    assert x.shape == (500, 384)
    assert len(y.unique()) == 21  # WNUT-16's 21 tags, rare ones kept
    assert torch.isfinite(x).all()
    fake_x, fake_y = proxy_features("fake-text", "minilm", minilm, size=500, cache_dir=tmp_path)
    assert fake_x.shape == x.shape
    assert len(fake_y.unique()) == CONLL_CLASSES  # no text_ys here


def test_cifar10_batches_and_mnist_idx_from_a_local_folder(swin, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        batch = {
            "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, 20)),
        }
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch, fh)
    x, y = proxy_features("cifar10", "tiny-swin", swin, size=50, data_root=tmp_path, cache_dir=tmp_path)
    assert x.shape == (50, swin.embed_dim)
    assert y.max() < 10

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(
            b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in imgs.shape) + imgs.tobytes()
        )
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(
            b"\x00\x00\x08\x01" + (30).to_bytes(4, "big") + (np.arange(30) % 10).astype(np.uint8).tobytes()
        )
    x, y = proxy_features("mnist", "tiny-swin", swin, size=30, data_root=tmp_path, cache_dir=tmp_path)
    assert x.shape == (30, swin.embed_dim)
    assert y.tolist() == list(np.arange(30) % 10)


def test_missing_and_mismatched_proxy_files_say_what_to_do(swin, minilm, tmp_path):
    with pytest.raises(ProxyDataError, match="--data-root"):
        proxy_features("cifar10", "tiny-swin", swin, data_root=None, cache_dir=tmp_path)
    with pytest.raises(ProxyDataError, match=r"cifar-10-python\.tar\.gz"):
        proxy_features("cifar10", "tiny-swin", swin, data_root=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ProxyDataError, match="train-images-idx3-ubyte"):
        proxy_features("mnist", "tiny-swin", swin, data_root=tmp_path, cache_dir=tmp_path)
    np.save(tmp_path / "text_xs.npy", np.zeros((10, 32, 768), np.float32))
    np.save(tmp_path / "text_ys.npy", np.zeros(10, np.int64))
    with pytest.raises(ProxyDataError, match="768-d but body 'minilm' takes 384-d"):
        proxy_features("conll", "minilm", minilm, data_root=tmp_path, cache_dir=tmp_path)


def test_conll_feature_pair_as_orca_ships_it(tmp_path):
    body = load_body("tiny-text")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "text_xs.npy", rng.standard_normal((40, 32, body.embed_dim)).astype(np.float32))
    np.save(tmp_path / "text_ys.npy", rng.integers(0, 5, 40))
    x, y = proxy_features("conll", "tiny-text", body, size=30, data_root=tmp_path, cache_dir=tmp_path)
    assert x.shape == (30, body.embed_dim)
    assert len(y) == 30
    want = np.load(tmp_path / "text_xs.npy")[:30].mean(1)
    assert np.allclose(x.numpy(), want, atol=1e-6)


def test_text_proxy_of_a_random_body_uses_that_bodys_embedding_layer():
    from orca_ray.proxies import _original_text_embeddings

    for seed in (0, 3):
        body = load_body("random:minilm", seed=seed)
        emb, _, _ = _original_text_embeddings(body)
        assert torch.equal(emb.embeddings.position_embeddings.weight, body.embedding_init.positions)


def test_cifar10_proxy_is_a_random_augmented_sample_as_orca(tmp_path):
    """ORCA's load_cifar(maxsize=5000): random training images, each through RandomCrop(32, padding=4) +
    RandomHorizontalFlip once, then CIFAR-10 normalisation."""
    from orca_ray.augment import CropFlip
    from orca_ray.proxies import _load_images

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = rng.integers(1, 256, (5, 20, 3, 32, 32), dtype=np.uint8)  # no zero pixels: padding shows as 0
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": data[i - 1].reshape(20, -1), "labels": list(range(20))}, fh)
    imgs, labels = _load_images("cifar10", 30, np.random.default_rng(3), tmp_path)
    again, _ = _load_images("cifar10", 30, np.random.default_rng(3), tmp_path)
    other, _ = _load_images("cifar10", 30, np.random.default_rng(4), tmp_path)
    assert imgs.shape == (30, 3, 32, 32)
    assert np.array_equal(imgs, again)
    assert not np.array_equal(imgs, other)
    assert labels.tolist() != list(range(20)) + list(range(10))  # not the first 30
    # every augmented image is a crop (offsets 0..8 of the zero-padded image), maybe mirrored
    src = data.reshape(100, 3, 32, 32)
    out = CropFlip(pad=4, fill=(0,))(src, np.random.default_rng(1))
    padded = np.pad(src, ((0, 0), (0, 0), (4, 4), (4, 4)))
    flips = 0
    for i in range(100):
        crops = [
            (flip, padded[i, :, top : top + 32, left : left + 32])
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
        ]
        hits = [flip for flip, c in crops if np.array_equal(out[i], c[:, :, ::-1] if flip else c)]
        assert hits, i
        flips += hits[0]
    assert 25 < flips < 75


def test_fake_images_are_torchvisions_fakedata():
    import torchvision

    from orca_ray.proxies import _CIFAR10_MEAN, _CIFAR10_STD, _load_images

    imgs, labels = _load_images("fake-images", 12, np.random.default_rng(0), None, seed=0)
    ref = torchvision.datasets.FakeData(
        size=12,
        image_size=(3, 32, 32),
        num_classes=10,
        transform=torchvision.transforms.Compose(
            [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(_CIFAR10_MEAN, _CIFAR10_STD)]
        ),
    )
    for i in range(12):
        img, label = ref[i]
        assert label == labels[i]
        assert np.allclose(imgs[i], img.numpy(), atol=1e-6)
    shifted, _ = _load_images("fake-images", 12, np.random.default_rng(0), None, seed=1)
    assert not np.allclose(shifted, imgs)


def test_fake_text_takes_conlls_class_count(tmp_path):
    body = load_body("tiny-text")
    np.save(tmp_path / "text_xs_32.npy", np.zeros((50, 4, body.embed_dim), np.float32))
    np.save(tmp_path / "text_ys_32.npy", np.arange(50) % 7)
    np.save(tmp_path / "text_xs.npy", np.ones((50, 4, body.embed_dim), np.float32))  # ORCA reads _32 first
    np.save(tmp_path / "text_ys.npy", np.arange(50) % 3)
    x, y = proxy_features("fake-text", "tiny-text", body, size=70, data_root=tmp_path, cache_dir=tmp_path)
    assert len(y.unique()) == 7
    assert x.shape == (70, body.embed_dim)
    cx, _ = proxy_features("conll", "tiny-text", body, size=10, data_root=tmp_path, cache_dir=tmp_path)
    assert not cx.any()
