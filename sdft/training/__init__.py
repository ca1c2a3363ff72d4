"""The training core: the LightningModule (`module.py`), per-sample losses, noise and timesteps, optimizers, EMA and
the prior from the base model's own prediction. Knows nothing of runs, files on disk or the command line."""
