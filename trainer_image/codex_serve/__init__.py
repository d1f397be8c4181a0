"""codex-serve: the built-in OpenAI-compatible inference server for CodexModel (runtime: builtin)."""
