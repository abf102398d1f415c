#!/usr/bin/env bash
# Builds the orca_ray image FROM the base tag pinned by its digest; arguments go to `docker build`
# (e.g. -t ghcr.io/your-org/orca-ray:0.1.0, --build-arg PREFETCH_MODELS=...).
# The digest is read from docker/base-image.digest. When that file is missing it is resolved once from the
# registry (`docker buildx imagetools inspect`) and written there: review it and commit it, so every later
# build, on any machine, starts from the same bytes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lock=${ORCA_RAY_BASE_DIGEST_FILE:-$root/docker/base-image.digest}
tag=$(sed -n 's/^ARG RAY_BASE=//p' "$root/docker/Dockerfile")
if [[ ! -s $lock ]]; then
  digest=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest}}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
  echo "$digest" >"$lock"
  echo "docker/build.sh: pinned $tag to $digest in $lock; review and commit that file" >&2
fi
digest=$(tr -d '[:space:]' <"$lock")
if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "docker/build.sh: $lock holds '$digest', not a sha256 digest; delete it to resolve $tag again" >&2
  exit 2
fi
exec docker build -f "$root/docker/Dockerfile" --build-arg RAY_BASE_DIGEST="$digest" "$@" "$root"
