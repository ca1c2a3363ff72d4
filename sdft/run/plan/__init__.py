"""`sdft plan`: what a configured run will cost (data, parameters, files, peak memory, time) before any weight loads.

compose.py   the config composed and checked as train.py does
arch.py      the model's architecture from configs only (shipped presets, a local folder, the hub cache)
trace.py     one real training step (and one grid step) on fake tensors: peak memory by kind, FLOPs
devices.py   the device table (peak FLOP/s, assumed efficiency, memory)
data_summary.py, files.py   per-phase data figures; the files a run writes
forecast.py  a phase's forecast from the pieces above; fit.py the cheapest overrides under a budget
report.py    the printed report and the headline train.py logs
"""
