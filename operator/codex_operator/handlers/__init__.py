"""kopf handlers; importing this package registers them (``kopf run -m codex_operator.handlers``)."""

from . import indexes, startup, watches  # noqa: F401
