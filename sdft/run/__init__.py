"""Run-level parts: the plan (forecast of a run before it starts)."""
