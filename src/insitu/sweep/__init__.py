"""Device-requirement sweeps: a study file, its points run on a process pool or Ray, a resumable
SQLite results store, figures and a Markdown report (``insitu sweep``).

Not imported by ``import insitu`` (it pulls in the training loop); import ``insitu.sweep``.
"""

from .report import export_csv, export_parquet, plot_study, write_report
from .runner import plan_workers, run_study, store_paths
from .store import FINAL_STATUSES, STATUSES, ResultsStore, StoreError
from .study import AxisConfig, StudyConfig, StudyPoint

__all__ = [
    "AxisConfig",
    "StudyConfig",
    "StudyPoint",
    "ResultsStore",
    "StoreError",
    "STATUSES",
    "FINAL_STATUSES",
    "run_study",
    "plan_workers",
    "store_paths",
    "export_csv",
    "export_parquet",
    "plot_study",
    "write_report",
]
