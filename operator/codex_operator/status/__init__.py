"""Pure status computation: observed objects in, the operator-owned part of status out.

Nothing here talks to the API. The handlers write the result with one patch, and only
the fields that differ (see :func:`status_patch`), so a stable object causes no write.
"""

from .model import MODEL_OWNED_FIELDS, compute_model_status
from .run import RUN_OWNED_FIELDS, compute_run_status, read_report
from .patch import status_patch
from .staged import StageJobs

__all__ = [
    "MODEL_OWNED_FIELDS",
    "RUN_OWNED_FIELDS",
    "StageJobs",
    "compute_model_status",
    "compute_run_status",
    "read_report",
    "status_patch",
]
