#!/usr/bin/env python
"""Side by side: sdft against diffusers' train_dreambooth_lora.py (the script users would run instead), issue #21.

Both train the same model folder on the same images with the same settings: prior preservation with 4 class
images, batch 1 (+1 class image), rank-4 U-Net LoRA (text encoder frozen), same seed, each with its own defaults for
everything else. Runs alternate (peer, sdft, then sdft, peer, ...); each tool runs N and 3N steps in fresh processes.

Printed per tool: per-step time by the wall-difference method ((wall(3N) - wall(N)) / 2N: set-up, saves and the end
cancel out), in-process per-step time (median interval between optimizer steps after the first, from a hook on
torch.optim.AdamW.step), set-up time to the first step, peak RSS (the child's ru_maxrss from wait4), and the ratios
(speed sdft/peer: > 1 means sdft is faster; RSS sdft/peer: < 1 means sdft uses less).

    python bench/peer.py --model tiny --resolution 64 --steps 4            # smoke test, ~1-2 min idle
    python bench/peer.py --model sd15 --resolution 256 --steps 4 --rounds 2  # the issue's comparison

The peer script needs torchvision: run this with the peer venv's python (docs/benchmarks.md, "Side by side"), or pass
--python. The peer script is found at --peer-script, $SDFT_PEER_SCRIPT, or ../shared/peer/ beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER_NAME = "train_dreambooth_lora.py"
INSTANCE_PROMPT, CLASS_PROMPT = "photo of sks character", "photo of a character"
N_INSTANCE, N_CLASS = 4, 4


# -- the child: hooks, then the tool's own script as __main__ --
def _torchvision_shim() -> None:
    """PyPI's torchvision is the CUDA build; beside the CPU torch its compiled ops do not load and its meta
    registrations then fail on `torchvision::nms`. The peer uses only transforms: define the two schemas it needs."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(list(spec.submodule_search_locations)[0])
    for lib in folder.glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            return
        except (OSError, RuntimeError):
            pass
    shim = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        shim.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_SHIM"] = shim  # keep the library object alive


def child(out: str, target: str, argv: list[str]) -> None:
    """Run `target` as __main__ with a timestamp after every AdamW step; write them to `out` at exit."""
    import atexit
    import runpy

    import torch

    start, stamps = time.perf_counter(), []
    step = torch.optim.AdamW.step

    def timed_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        stamps.append(time.perf_counter() - start)
        return result

    torch.optim.AdamW.step = timed_step
    atexit.register(lambda: Path(out).write_text(json.dumps({"steps": stamps, "total": time.perf_counter() - start})))
    _torchvision_shim()
    sys.argv = [target, *argv]
    sys.path.insert(0, str(Path(target).parent))
    runpy.run_path(target, run_name="__main__")


# -- the shared inputs --
def model_folder(kind: str, work: Path) -> Path:
    """The tiny model's folder, or an SD 1.5-shaped random-weight pipeline folder built once under `work`."""
    if kind == "tiny":
        from sdft.models.tiny import ensure_tiny_model

        return ensure_tiny_model()
    folder = work / "sd15-random"
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet, build_sd15_vae
    from sdft.models.tiny import SD15_SCHEDULER_CONFIG
    from sdft.models.tokenizer_vocab import build_clip_tokenizer, write_vocab_files

    print("building the SD 1.5-shaped random model folder (once) ...", flush=True)
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=build_sd15_vae(),
        text_encoder=build_sd15_text_encoder(),
        tokenizer=build_clip_tokenizer(),
        unet=build_sd15_unet(),
        scheduler=PNDMScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = work / "sd15-random.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    write_vocab_files(tmp / "tokenizer")
    tmp.rename(folder)
    return folder


def image_folders(work: Path, size: int) -> tuple[Path, Path]:
    """4 instance images (square crops of datasets/example_subject) and 4 class images (seeded noise), PNG only:
    the peer reads every file of its folders as an image."""
    import numpy as np
    from PIL import Image

    inst, cls = work / f"instance-{size}", work / f"class-{size}"
    if len(list(inst.glob("*.png"))) == N_INSTANCE and len(list(cls.glob("*.png"))) == N_CLASS:
        return inst, cls
    for d in (inst, cls):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    sources = sorted((REPO / "datasets" / "example_subject").rglob("*.png"))[:N_INSTANCE]
    if len(sources) < N_INSTANCE:
        sys.exit(f"bench/peer.py: datasets/example_subject holds {len(sources)} PNG images, {N_INSTANCE} needed.")
    side = 2 * size  # both tools resize it down to `size`
    for i, src in enumerate(sources):
        img = Image.open(src).convert("RGB")
        s = min(img.size)
        box = ((img.width - s) // 2, (img.height - s) // 2, (img.width + s) // 2, (img.height + s) // 2)
        img.crop(box).resize((side, side), Image.LANCZOS).save(inst / f"instance_{i}.png")
    rng = np.random.default_rng(0)
    for i in range(N_CLASS):
        noise = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((side, side), Image.BICUBIC).save(cls / f"class_{i}.png")
    return inst, cls


def peer_command(
    script: Path, model: Path, inst: Path, cls: Path, res: int, steps: int, seed: int, out: Path
) -> list[str]:
    return [
        str(script),
        f"--pretrained_model_name_or_path={model}",
        f"--instance_data_dir={inst}",
        f"--class_data_dir={cls}",
        f"--instance_prompt={INSTANCE_PROMPT}",
        f"--class_prompt={CLASS_PROMPT}",
        "--with_prior_preservation",
        f"--num_class_images={N_CLASS}",
        f"--resolution={res}",
        "--train_batch_size=1",
        "--rank=4",
        f"--max_train_steps={steps}",
        f"--seed={seed}",
        f"--output_dir={out}",
    ]


def sdft_command(
    model: Path, inst: Path, cls: Path, res: int, steps: int, seed: int, out: Path, extra: list[str]
) -> list[str]:
    return [
        str(REPO / "train.py"),
        "data=folder",
        "prior=default",
        f"model.path={model}",
        "model.local_files_only=true",
        f"data.instance_dir={inst}",
        f"data.class_dir={cls}",
        f"data.instance_prompt={INSTANCE_PROMPT}",
        f"data.class_prompt={CLASS_PROMPT}",
        f"prior.num_class_images={N_CLASS}",
        f"data.resolution={res}",
        "data.batch_size=1",
        "data.random_flip=false",  # the peer does not flip
        "adapter.rank=4",
        "adapter.train_text_encoder=false",
        f"trainer.max_steps={steps}",
        f"seed={seed}",
        f"output_dir={out}",
        f"hydra.run.dir={out}/hydra",
        *extra,
    ]


def run_one(python: str, argv: list[str], work: Path, threads: int, log: Path) -> dict:
    """One child process; its wall time, AdamW step stamps and peak RSS."""
    stamps = work / "stamps.json"
    stamps.unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [python, str(Path(__file__).resolve()), "--child", str(stamps), "--", *argv]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(
            f"bench/peer.py: {' '.join(cmd[:5])} ... failed (exit {proc.returncode}); see {log}:\n"
            + "\n".join(log.read_text().splitlines()[-15:])
        )
    data = json.loads(stamps.read_text())
    return {"wall": wall, "steps": data["steps"], "rss_gib": usage.ru_maxrss / 2**20}


def per_step(short: dict | None, long: dict, n: int) -> dict:
    """Per-step figures of one tool's N- and 3N-step runs (`short` None: only the 3N run, no wall-difference)."""
    gaps = [b - a for a, b in zip(long["steps"], long["steps"][1:])]
    return {
        "wall_diff_s": float("nan") if short is None else (long["wall"] - short["wall"]) / (2 * n),
        "in_process_s": statistics.median(gaps) if gaps else float("nan"),
        "setup_s": long["steps"][0] if long["steps"] else float("nan"),
        "rss_gib": max(long["rss_gib"], short["rss_gib"] if short else 0.0),
        "steps_seen": len(long["steps"]),
    }


def find_peer(arg: str | None) -> Path:
    for c in (
        arg,
        os.environ.get("SDFT_PEER_SCRIPT"),
        REPO.parent / "shared/peer" / PEER_NAME,
        REPO.parent.parent / "shared/peer" / PEER_NAME,
    ):
        if c and Path(c).is_file():
            return Path(c).resolve()
    sys.exit(f"bench/peer.py: {PEER_NAME} not found: pass --peer-script or set SDFT_PEER_SCRIPT.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--resolution", type=int, default=None, help="default: 64 (tiny), 256 (sd15)")
    p.add_argument("--steps", type=int, default=4, help="N: each tool runs N and 3N steps (>= 4: see main)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are reported")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", 2)),
        help="OMP_NUM_THREADS of both tools (default: this one's, else 2)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for both tools (the peer needs torchvision)")
    p.add_argument("--peer-script", default=None)
    p.add_argument(
        "--work",
        default=None,
        help="model, images, outputs and logs (default: a temp folder; the SD "
        "1.5 model folder (4.3 GB) is kept there between runs when given)",
    )
    p.add_argument("--sdft-arg", action="append", default=[], help="extra Hydra override for sdft (repeatable)")
    p.add_argument(
        "--peer-arg",
        action="append",
        default=[],
        help="extra flag for the peer script (repeatable), e.g. --peer-arg=--mixed_precision=bf16 on a GPU",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="also run sdft with these Hydra overrides (besides its defaults), as its own row with its own ratios; "
        "repeatable, e.g. --variant bf16=trainer.precision=bf16-mixed,model.weight_dtype=bf16",
    )
    p.add_argument(
        "--in-process-only",
        action="store_true",
        help="run each tool once (3N steps) instead of N and 3N: in-process per-step time and peak RSS, no "
        "wall-difference (halves the time; the wall-difference needs a large N for sdft anyway: its end grid varies)",
    )
    p.add_argument("--out", default=None, help="append the result as a JSON line to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    _torchvision_shim()  # transformers imports torchvision when it is installed
    res = args.resolution or (64 if args.model == "tiny" else 256)
    script = find_peer(args.peer_script)
    work = Path(args.work or tempfile.mkdtemp(prefix="sdft-peer-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = model_folder(args.model, work)
    inst, cls = image_folders(work, res)
    n = args.steps
    if 2 * n < N_INSTANCE + N_CLASS:  # sdft's auto cache would be skipped in the N-step run only (cache_policy.py)
        print(
            f"warning: N={n} < {(N_INSTANCE + N_CLASS) // 2}: sdft's N-step run skips its latent cache (filling it "
            "would encode more images than the run), its 3N-step run uses it: the wall-diff is then not a "
            "cached step's time. Use --steps 4 or more.",
            flush=True,
        )
    variants = {"sdft": list(args.sdft_arg)}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or not overrides or name in ("peer", "sdft"):
            sys.exit(f"bench/peer.py: --variant {spec!r}: expected NAME=OVERRIDE[,OVERRIDE...] with a new NAME")
        variants[f"sdft:{name}"] = [*args.sdft_arg, *overrides.split(",")]
    tools = ["peer", *variants]
    results: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.rounds):
        for tool in tools if r % 2 == 0 else tools[::-1]:
            runs = []
            for steps in (3 * n,) if args.in_process_only else (n, 3 * n):
                out = work / f"out-{tool.replace(':', '-')}-{r}-{steps}"
                shutil.rmtree(out, ignore_errors=True)
                argv = (
                    [*peer_command(script, model, inst, cls, res, steps, args.seed, out), *args.peer_arg]
                    if tool == "peer"
                    else sdft_command(model, inst, cls, res, steps, args.seed, out, variants[tool])
                )
                print(f"round {r + 1}/{args.rounds}: {tool} {steps} steps ...", flush=True)
                log = work / f"log-{tool.replace(':', '-')}-{r}-{steps}.txt"
                runs.append(run_one(args.python, argv, work, args.threads, log))
                shutil.rmtree(out, ignore_errors=True)
            short, long = (None, *runs) if args.in_process_only else runs
            results[tool].append(per_step(short, long, n))
            print(f"  {tool}: {json.dumps({k: round(v, 3) for k, v in results[tool][-1].items()})}", flush=True)
    med = {t: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for t, rs in results.items()}
    ratios = {
        t: {
            "speed_wall_diff": med["peer"]["wall_diff_s"] / med[t]["wall_diff_s"],
            "speed_in_process": med["peer"]["in_process_s"] / med[t]["in_process_s"],
            "rss": med[t]["rss_gib"] / med["peer"]["rss_gib"],
        }
        for t in variants
    }
    ratio = ratios["sdft"]
    load = os.getloadavg()[0]
    print(
        f"\n{args.model} {res}px, N={n}/{3 * n} steps, {args.rounds} round(s), {args.threads} threads, "
        f"{os.cpu_count()} CPUs, load {load:.1f} at the end (a load above the CPU count means contended figures)"
    )
    width = max(len(t) for t in tools)
    print(f"{'':{width}} {'s/step wall-diff':>17} {'s/step in-process':>18} {'set-up s':>9} {'peak RSS GiB':>13}")
    for t in tools:
        m = med[t]
        print(
            f"{t:{width}} {m['wall_diff_s']:17.3f} {m['in_process_s']:18.3f} {m['setup_s']:9.1f} {m['rss_gib']:13.2f}"
        )
    for t, q in ratios.items():
        print(
            f"{t}/peer speed: {q['speed_wall_diff']:.2f}x (wall-diff), {q['speed_in_process']:.2f}x "
            f"(in-process); peak RSS {t}/peer: {q['rss']:.2f}  (goal: speed >= 1.6, RSS <= 0.8)"
        )
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "model": args.model,
                        "resolution": res,
                        "steps": n,
                        "rounds": args.rounds,
                        "threads": args.threads,
                        "machine": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(),
                        "load_end": load,
                        "sdft_args": args.sdft_arg,
                        "peer_args": args.peer_arg,
                        "variants": variants,
                        "median": med,
                        "ratio": ratio,
                        "ratios": ratios,
                        "runs": results,
                    }
                )
                + "\n"
            )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4], sys.argv[5:])
    else:
        sys.exit(main())
