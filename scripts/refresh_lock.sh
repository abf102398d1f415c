#!/usr/bin/env bash
# Refresh constraints.txt, the lock every install uses (.ci/run, the README, docker/Dockerfile): a fresh venv gets
# the project with every extra, and the lock becomes exactly what pip installed (`pip freeze`). Run it on purpose
# (a new dependency, a wanted upgrade), then run the suite against the new lock before committing it: the lock is
# what the suite was tested with, so an unpinned release can no longer change an install by chance.
#   scripts/refresh_lock.sh            # keep every pinned version; resolve only what is new (a new dependency)
#   scripts/refresh_lock.sh --upgrade  # resolve everything afresh, under the pinned torch/torchvision pair only
set -euo pipefail
cd "$(dirname "$0")/.."
# Extras left out of the lock (none today; list an extra here when it cannot install beside the rest).
unlocked_extras=""
extras=$(UNLOCKED="$unlocked_extras" python3 - <<'PY'
import os, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
skip = set(os.environ["UNLOCKED"].split())
print(",".join(sorted(e for e in extras if e not in skip and not set(extras[e]) & {f"orca_ray[{s}]" for s in skip})))
PY
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ "${1:-}" == "--upgrade" ]]; then
  grep -E '^(torch|torchvision)==' constraints.txt > "$work/constraints.txt"
else
  cp constraints.txt "$work/constraints.txt"
fi
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c "$work/constraints.txt" -e ".[$extras]"
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
