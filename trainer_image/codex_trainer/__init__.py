"""codex-train: fine-tune, evaluate and publish one CodexTrainingRun (see recipe.Recipe)."""
