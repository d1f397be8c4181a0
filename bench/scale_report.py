"""The figures of ``bench/operator_scale.py`` read against issue 12's targets, and as a table.

Pure functions of the results dict, so that the summary printed and the JSON written say the
same thing, and so that the lead's re-run reads the same way as this one.
"""

from __future__ import annotations

from typing import Any, Optional

# (what, target) of issue 12, "Performance must not regress".
RATIO_AT_1000 = 1.5
P99_AT_100_S = 2.0
RSS_AT_1000_MB = 200.0
GROWTH = 1.2
RSS_AT_SCALE_MB = 400.0


def ratio(operator_seconds: float, floor_seconds: Optional[float]) -> Optional[float]:
    """Operator time to all Jobs over the floor's; None without a floor."""
    if not floor_seconds:
        return None
    return round(operator_seconds / floor_seconds, 2)


def per_run_ms(batch: dict[str, Any]) -> float:
    return round(1000 * batch["all_jobs_seconds"] / batch["runs"], 2)


def growth(batches: list[dict[str, Any]], scale_runs: int) -> Optional[dict[str, Any]]:
    """The scale batch's per-run time against the 1000-run batch's (else the largest smaller one)."""
    scale = next((b for b in batches if b["runs"] == scale_runs), None)
    smaller = [b for b in batches if b["runs"] < scale_runs]
    if scale is None or not smaller:
        return None
    reference = next((b for b in smaller if b["runs"] == 1000), max(smaller, key=lambda b: b["runs"]))
    grown = {"runs": scale_runs, "reference_runs": reference["runs"],
             "per_run_ms": per_run_ms(scale), "reference_per_run_ms": per_run_ms(reference),
             "growth": round(per_run_ms(scale) / per_run_ms(reference), 2),
             "rss_peak_mb": scale["rss_peak_mb"], "rss_at_all_jobs_mb": scale["rss_at_all_jobs_mb"]}
    if scale.get("floor") and reference.get("floor"):
        # How much of the growth is the apiserver's own: the floor's per-run time over the same two sizes.
        floor_ms, reference_floor_ms = per_run_ms(scale["floor"]), per_run_ms(reference["floor"])
        grown.update(floor_per_run_ms=floor_ms, reference_floor_per_run_ms=reference_floor_ms,
                     floor_growth=round(floor_ms / reference_floor_ms, 2))
    return grown


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target the results can speak to: its figure, its bound (issue 12's ``<`` or ``<=``), met or not."""
    by_runs = {b["runs"]: b for b in results["batches"]}
    checks: list[tuple[str, Optional[float], str, float]] = []
    if 1000 in by_runs:
        checks.append(("ratio at 1000 runs", by_runs[1000].get("ratio"), "<=", RATIO_AT_1000))
        checks.append(("RSS peak at 1000 runs (MB)", by_runs[1000]["rss_peak_mb"], "<", RSS_AT_1000_MB))
    if 100 in by_runs:
        checks.append(("p99 apply->Job at 100 runs (s)", by_runs[100]["p99_apply_to_job_s"], "<", P99_AT_100_S))
    if "idle" in results:
        checks.append(("writes while idle", results["idle"]["idle_apiserver_writes_on_operator_kinds"], "<=", 0))
    grown = results.get("growth")
    if grown:
        checks.append((f"per-run time {grown['runs']} / {grown['reference_runs']} runs", grown["growth"], "<=",
                       GROWTH))
        checks.append((f"RSS peak at {grown['runs']} runs (MB)", grown["rss_peak_mb"], "<", RSS_AT_SCALE_MB))
    return [{"what": what, "figure": figure, "target": f"{op} {bound}",
             "met": None if figure is None else (figure <= bound if op == "<=" else figure < bound)}
            for what, figure, op, bound in checks]


def _cell(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def _quiet(batch: dict[str, Any]) -> str:
    """"yes", or the write rate the batch started under when the cluster was still busy."""
    before = batch.get("cluster_before")
    if before is None:
        return "-"
    return "yes" if before["quiet"] else f"no ({before['writes_per_s']} writes/s)"


def batch_rows(batches: list[dict[str, Any]]) -> list[str]:
    """A markdown table, the shape bench/RESULTS.md uses, so the figures can be pasted there."""
    head = ("| runs | all Jobs | p50 apply→Job | p99 apply→Job | RSS at all Jobs / settled / peak | req/run "
            "| floor all Jobs | floor p50 / p99 | floor req/run | ratio | load start → end "
            "| started quiet (op / floor) |")
    rows = [head, "|" + "---:|" * (head.count("|") - 1)]
    for b in batches:
        floor = b.get("floor") or {}
        load = b["load_average"]
        rows.append(
            f"| {b['runs']} | {b['all_jobs_seconds']} s | {b['p50_apply_to_job_s']} s | {b['p99_apply_to_job_s']} s "
            f"| {b['rss_at_all_jobs_mb']} / {b['rss_settled_mb']} / {b['rss_peak_mb']} MB | {b['requests_per_run']} "
            f"| {_cell(floor.get('all_jobs_seconds'), ' s')} "
            f"| {_cell(floor.get('p50_apply_to_job_s'))} / {_cell(floor.get('p99_apply_to_job_s'))} s "
            f"| {_cell(floor.get('requests_per_run'))} | {_cell(b.get('ratio'))} "
            f"| {load[0][0]:.1f} → {load[1][0]:.1f} | {_quiet(b)} / {_quiet(floor)} |")
    return rows


def summary(results: dict[str, Any]) -> str:
    """The human summary: one table row per batch, then idle, growth, the cluster and the targets."""
    lines = [f"codex-operator scale bench: {results['cpus']} CPUs, floor = {results['floor_workers']} parallel "
             f"creators (the operator's API client pool), runs created by {results['run_creators']} threads",
             f"uptime at start: {results['uptime_at_start']}", *batch_rows(results["batches"])]
    for b in results["batches"]:
        if (b.get("floor") or {}).get("all_children_seconds") is not None:
            lines.append(f"floor {b['runs']}: every child, Roles and RoleBindings included, in "
                         f"{b['floor']['all_children_seconds']} s")
    idle = results.get("idle")
    if idle:
        lines.append(f"idle {idle['idle_seconds']:.0f} s: {idle['idle_operator_requests']:.0f} operator requests, "
                     f"{idle['idle_operator_writes']:.0f} operator writes, "
                     f"{idle['idle_apiserver_writes_on_operator_kinds']:.0f} apiserver writes on the operator's kinds")
    grown = results.get("growth")
    if grown:
        lines.append(f"growth: {grown['per_run_ms']} ms/run at {grown['runs']} runs vs {grown['reference_per_run_ms']} "
                     f"at {grown['reference_runs']} = {grown['growth']}x; RSS peak {grown['rss_peak_mb']} MB")
        if "floor_growth" in grown:
            lines.append(f"floor growth: {grown['floor_per_run_ms']} ms/run vs {grown['reference_floor_per_run_ms']} "
                         f"= {grown['floor_growth']}x (the apiserver's own share of the growth)")
    for name, footprint in results.get("cluster", {}).items():
        lines.append(f"cluster after {name}: " + ", ".join(f"{k} {v}" for k, v in footprint.items()))
    for check in results.get("targets", []):
        verdict = {True: "met", False: "NOT met", None: "no figure"}[check["met"]]
        lines.append(f"target {check['what']}: {_cell(check['figure'])} (target {check['target']}): {verdict}")
    if results.get("error"):
        lines.append(f"stopped early: {results['error']}")
    lines.append(f"uptime at end: {results.get('uptime_at_end', '-')}")
    return "\n".join(lines)
