"""Results in Parquet: the schema (`schema`), the Ray Tune callback that writes them (`sink`, imports Ray) and
the readers (`read`, no Ray). Importing this package does not import Ray:

    from orca_ray.results import read_results, final_scores      # s3:// and gs:// too
    from orca_ray.results.sink import ParquetSink                # inside a Tune run
"""

from .read import FINAL_COLUMNS, final_scores, read_results
from .schema import FILE_SCHEMA, PARTITION_COLUMN, RESULT_SCHEMA, TRIAL_FIELDS, config_json

__all__ = [
    "FILE_SCHEMA",
    "FINAL_COLUMNS",
    "PARTITION_COLUMN",
    "RESULT_SCHEMA",
    "TRIAL_FIELDS",
    "config_json",
    "final_scores",
    "read_results",
]
