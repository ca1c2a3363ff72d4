"""`sdft plan [--device D] [--fit 8GB|t4] [--json] [--config-name NAME] OVERRIDES...`: the run's forecast
(sdft/run/plan/): the same overrides and config as `python train.py`, no weights loaded."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="forecast a training run: data, parameters, files, peak memory, time (no weights loaded)",
        description="Forecast `python train.py OVERRIDES...` before anything is downloaded or trained.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, exactly as train.py takes them")
    p.add_argument("--config-name", "-cn", default="config", help="the primary config in conf/ (train.py's)")
    p.add_argument("--device", default="cpu", help="device of the time forecast: cpu, h100, a100, 4090, 3090, t4, ...")
    p.add_argument("--fit", metavar="BUDGET", help="memory budget (8GB) or device (t4): print the overrides that fit")
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from sdft.run.plan.compose import compose_run, plan_run
    from sdft.run.plan.devices import budget_gib, device
    from sdft.run.plan.report import as_json, report

    dev = device(args.device)  # an unknown name fails before anything else
    budget = budget_gib(args.fit) if args.fit else None
    cfg = compose_run(args.overrides, args.config_name)
    plan = plan_run(cfg, dev)
    print(json.dumps(as_json(plan), indent=2, default=str) if args.json else report(plan))
    if budget is not None:
        from sdft.run.plan.fit import fit, fit_report

        print(fit_report(fit(args.overrides, args.config_name, plan, budget[0], dev), budget[1]))
    return 0
