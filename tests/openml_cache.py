"""A local OpenML download cache in the layout scikit-learn's `fetch_openml(data_home=...)` reads, written from
rows the test chooses, so staging runs without network."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path


def write_openml_cache(data_home: Path, did: int, columns: list, rows: list, target: str, name: str = "toy"):
    """Write dataset `did` into scikit-learn's OpenML cache under `data_home`.

    Args:
        data_home: the `data_home` given to fetch_openml.
        did: the dataset id.
        columns: (name, "numeric" | "nominal", nominal values or None) per column.
        rows: one list per row; None is a missing value ("?" in the ARFF).
        target: the default target attribute.
        name: the dataset's name.
    """
    root = Path(data_home) / "openml" / "openml.org"

    def put(rel: str, payload: bytes) -> None:
        p = root / (rel + ".gz")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress(payload))

    lines = [f"@RELATION {name}", ""]
    for cname, kind, values in columns:
        lines.append(
            f"@ATTRIBUTE '{cname}' " + ("NUMERIC" if kind == "numeric" else "{" + ",".join(values) + "}")
        )
    lines += ["", "@DATA", *(",".join("?" if v is None else str(v) for v in r) for r in rows)]
    arff = ("\n".join(lines) + "\n").encode()
    file_id = 1000 + did
    put(f"data/v1/download/{file_id}/{name}.arff", arff)
    description = {
        "id": str(did),
        "name": name,
        "version": "1",
        "status": "active",
        "format": "ARFF",
        "url": f"https://api.openml.org/data/v1/download/{file_id}/{name}.arff",
        "file_id": str(file_id),
        "md5_checksum": hashlib.md5(arff).hexdigest(),
        "default_target_attribute": target,
        "description": "written by a test",
    }
    put(f"api/v1/json/data/{did}", json.dumps({"data_set_description": description}).encode())
    features = []
    for i, (cname, kind, values) in enumerate(columns):
        f = {
            "index": str(i),
            "name": cname,
            "data_type": kind,
            "is_target": "true" if cname == target else "false",
            "is_ignore": "false",
            "is_row_identifier": "false",
            "number_of_missing_values": str(sum(r[i] is None for r in rows)),
        }
        if values:
            f["nominal_value"] = values
        features.append(f)
    put(f"api/v1/json/data/features/{did}", json.dumps({"data_features": {"feature": features}}).encode())
    quality = [{"name": "NumberOfInstances", "value": str(float(len(rows)))}]
    put(f"api/v1/json/data/qualities/{did}", json.dumps({"data_qualities": {"quality": quality}}).encode())
