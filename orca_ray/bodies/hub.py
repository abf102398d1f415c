"""Where a body's files are: a local folder, the local Hugging Face cache, or the hub when it answers at once.

Nothing here waits on the network: a hub id is used from the local cache when it is there, from the hub only
when the hub answers a TCP connect within a few seconds, and otherwise fails at once naming the command that
fetches it and where to put it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .base import BodyNotFoundError


def is_local_name(name: str) -> bool:
    """Whether a body name means a folder on this machine (it exists, or it is spelled as a path).

    Args:
        name: a body name without prefixes.
    """
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~"))


def locate(name: str, repo: str, revision: str | None = None) -> tuple[str, bool]:
    """(path or hub id, local_files_only) for from_pretrained; raises BodyNotFoundError instead of retrying.

    Args:
        name: the body's name as given (for messages).
        repo: a local folder or a hub id.
        revision: a hub branch or commit (Pythia's "step1000"); None for the default branch.
    """
    if is_local_name(repo):
        local = Path(repo).expanduser()
        if not (local / "config.json").is_file():
            raise BodyNotFoundError(
                f"body folder {local} has no config.json. A body folder is what "
                "`save_pretrained` or `hf download REPO --local-dir DIR` writes."
            )
        return str(local), True
    if cached(repo, revision):
        return repo, True
    problem = "HF_HUB_OFFLINE is set" if offline() else hub_unreachable()
    if problem is None:
        return repo, False
    from huggingface_hub import constants

    rev = f" --revision {revision}" if revision else ""
    raise BodyNotFoundError(
        f"body {name!r} (hub id {repo}) is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        f"cannot be fetched: {problem}. On a machine with internet run `hf download {repo}{rev}` and copy its "
        f"cache folder to {constants.HF_HUB_CACHE} here (or set HF_HOME), or save it to a folder with "
        f"`hf download {repo}{rev} --local-dir /models/{repo.split('/')[-1]}` and pass that folder as the body."
    )


def cached(repo: str, revision: str | None = None) -> bool:
    """Whether the hub id's config.json (at `revision`) is in the local Hugging Face cache.

    Args:
        repo: a hub id.
        revision: a branch or commit, None for the default branch.
    """
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub answers a TCP connect within `timeout`; else why not (one try, no retries).

    Args:
        timeout: seconds to wait for the connect.
    """
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return (
            f"the hub ({constants.ENDPOINT}) is unreachable from this machine ({e.__class__.__name__}: {e})"
        )
