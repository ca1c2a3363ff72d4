"""`sdft plan`: what a configured run will cost (data, parameters, files, peak memory, time) before any weight loads.

compose.py          the config composed and checked as train.py does; plan_run
plan.py             Plan and make_plan (every phase forecast)
arch.py             the model's architecture from configs only (shipped presets, a local folder, the hub cache)
trace.py, tracker.py  one real training step (and one grid step) on fake tensors: live bytes by kind, FLOPs
data_summary.py     per-phase data figures
forecast.py         a phase's forecast: files, peak, seconds on a device
devices.py, fit.py  the device table; the cheapest overrides under a memory budget
report.py, headline.py  the printed / JSON plan; the headline train.py logs
"""
