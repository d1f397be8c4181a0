"""codex-operator: reconcile CodexTrainingRun and CodexModel with kopf.

Layout: ``names`` (every child name and label), ``config`` (the frozen startup config),
``builders`` (pure object builders), ``status`` (pure status computation), ``k8s`` (the
kubernetes client off the event loop), ``handlers`` (thin kopf handlers), ``metrics``.
"""
