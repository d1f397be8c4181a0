"""kopf handlers; importing this package registers them (``kopf run -m codex_operator.handlers``)."""

from . import indexes, models, runs, startup, watches  # noqa: F401
