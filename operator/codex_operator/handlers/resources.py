"""The resources the handlers are registered for (group, version, plural)."""

from codex_api import API_GROUP, API_VERSION
from codex_api.model import PLURAL as MODEL_PLURAL
from codex_api.training_run import PLURAL as RUN_PLURAL

from .. import names

RUNS = (API_GROUP, API_VERSION, RUN_PLURAL)
MODELS = (API_GROUP, API_VERSION, MODEL_PLURAL)
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
DEPLOYMENTS = ("apps", "v1", "deployments")
SERVICES = ("", "v1", "services")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")

# The children are watched (and indexed) only when the operator labelled them.
ManagedOnly = {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}
