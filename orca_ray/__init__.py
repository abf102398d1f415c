"""orca_ray: Ray Tune sweeps of ORCA-style cross-modal fine-tuning (align then refine), results in Parquet."""

__version__ = "0.1.0"
