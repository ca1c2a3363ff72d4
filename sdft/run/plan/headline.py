"""What train.py logs at start: the plan's headline (steps, forecast peak and time), and on a CUDA device a warning
before the model loads when the forecast peak exceeds the free memory."""

from __future__ import annotations

import copy
import logging
import re

import torch

from sdft.config import SDXL_TINY_MODEL, TINY_MODEL
from sdft.run.plan.devices import GPUS, Device, cpu_device

log = logging.getLogger("sdft")
# the built-in test models: the test suite trains them in dozens of runs, and a tiny step's time is overhead, not FLOPs
UNTRACED_MODELS = (TINY_MODEL, SDXL_TINY_MODEL)


def run_device() -> Device:
    """The table's entry for this process' accelerator (CUDA: by name, else its memory with assumed figures)."""
    if not torch.cuda.is_available():
        return cpu_device()
    name = torch.cuda.get_device_name().lower()
    for key in sorted(GPUS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key.split('-')[0])}\b", name):
            return GPUS[key]
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    return Device(name, 20.0, 80.0, total, 0.35)


def announce(cfg, phases: list, datas: list) -> None:
    """Log the headline; never stops a run (a forecast that fails is logged and skipped)."""
    from sdft.run.plan.plan import make_plan
    from sdft.run.plan.report import headline

    if cfg.model.path in UNTRACED_MODELS:
        steps = sum(p.trainer.max_steps for p in phases)
        log.info(
            "plan: %d steps (no forecast for the built-in test model %r: `sdft plan` gives one)", steps, cfg.model.path
        )
        return
    device = run_device()
    try:
        plan = make_plan(cfg, device, checked=([copy.deepcopy(p) for p in phases], datas))
    except Exception as err:  # noqa: BLE001  the forecast is advice: training goes on without it
        log.info("plan: no forecast for this run (%s: %s)", type(err).__name__, err)
        return
    log.info("%s", headline(plan))
    if torch.cuda.is_available():
        free = torch.cuda.mem_get_info()[0]
        if plan.peak > free:
            log.warning(
                "plan: the forecast peak %.2f GiB exceeds the %.2f GiB free on %s: expect CUDA out of memory. "
                "`sdft plan --fit %.0fGB <your overrides>` lists the overrides that fit.",
                plan.peak / 2**30,
                free / 2**30,
                torch.cuda.get_device_name(),
                free / 2**30,
            )
