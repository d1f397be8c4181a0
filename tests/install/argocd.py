"""Run the Argo CD Lua health checks the way Argo CD does: Lua 5.1, a global `obj`."""

from __future__ import annotations

from pathlib import Path

import lupa.lua51 as lupa

HEALTH_DIR = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "health"
SCRIPTS = {"CodexTrainingRun": "codextrainingrun.lua", "CodexModel": "codexmodel.lua"}


def _to_lua(runtime, value):
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        # Lua arrays start at 1, as gopher-lua builds them from JSON.
        return runtime.table_from({i + 1: _to_lua(runtime, v) for i, v in enumerate(value)})
    return value


def health(obj: dict) -> dict:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    version = runtime.eval("_VERSION")
    assert version == "Lua 5.1", f"Argo CD speaks Lua 5.1, lupa gave {version}"
    runtime.globals().obj = _to_lua(runtime, obj)
    script = (HEALTH_DIR / SCRIPTS[obj["kind"]]).read_text()
    result = runtime.execute(script)
    return {"status": result["status"], "message": result["message"]}
