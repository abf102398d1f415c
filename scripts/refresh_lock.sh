#!/usr/bin/env bash
# Refresh constraints.txt, the lock every install uses (.ci/run, the README, docker/Dockerfile): a fresh venv gets
# the project with every extra, resolved by pip under the torch/torchvision pair pinned in the current lock, and
# the lock becomes exactly what was installed (`pip freeze`). Run it on purpose (a new dependency, a wanted
# upgrade), then run the suite against the new lock before committing it: a lock is what the suite was tested
# with, so an unpinned release can no longer change an install by chance.
#   scripts/refresh_lock.sh            # writes constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
extras=$(python3 - <<'PY'
import tomllib
print(",".join(sorted(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"])))
PY
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -E '^(torch|torchvision)==' constraints.txt > "$work/torch-pair.txt"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c "$work/torch-pair.txt" -e ".[$extras]"
{
  echo "# The lock: every package the suite was tested with (scripts/refresh_lock.sh wrote it on $(date -u +%F)"
  echo "# with Python $("$work/venv/bin/python" -c 'import platform; print(platform.python_version())')" \
       "on $(uname -m), extras: $extras)."
  echo "# pip install -c constraints.txt -e \".[dev]\" installs exactly these versions. torch/torchvision are the"
  echo "# CUDA builds from PyPI (they also run on CPU); on a GPU machine with another CUDA, install your torch"
  echo "# first and drop the torch, torchvision, triton and nvidia-* lines. Refresh: scripts/refresh_lock.sh."
  "$work/venv/bin/python" -m pip freeze --exclude-editable --all | grep -vE '^pip=='
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages pinned"
