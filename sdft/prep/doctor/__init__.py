"""`sdft data doctor`: find what will spoil a LoRA before the first step.

The dataset is resolved and scanned exactly as a training run does (sdft/data: folders, kohya TOML, captions, buckets),
then checked: files, duplicates, image quality, faces, captions, balance, and optionally a short run's per-image loss.
Each check module turns what it measured into `Finding`s (sdft/prep/doctor/findings.py); the reports are written by
text.py / json (report.py) and html.py. Nothing is written into the dataset; `--move-to` moves files only when asked.
"""
