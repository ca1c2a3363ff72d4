"""Balance: images x repeats per concept (a concept seen far more often dominates the LoRA) and class vs instance
images (a few class images cycle over every instance sample). From the scan: cheap, run at training start."""

from __future__ import annotations

from sdft.prep.doctor.findings import Finding, Severity
from sdft.prep.doctor.inputs import DoctorData

RATIO_WARN = 3.0  # one concept's samples per epoch vs another's


def sets(data: DoctorData) -> list[dict]:
    """Per image set: kind, images, repeats, samples per epoch (images x repeats), class key."""
    rows: dict[str, dict] = {}
    for item in data.items:
        c = item.concept
        row = rows.setdefault(
            str(c.folder) if c else item.name,
            {
                "set": item.name,
                "kind": "class" if item.is_reg else "instance",
                "images": 0,
                "repeats": c.repeats if c else 1,
                "class": c.class_key if c else None,
            },
        )
        row["images"] += 1
    for row in rows.values():
        row["samples"] = row["images"] * row["repeats"]
    return list(rows.values())


def check(data: DoctorData) -> list[Finding]:
    out = []
    rows = sets(data)
    inst = [r for r in rows if r["kind"] == "instance"]
    if len(inst) > 1:
        lo, hi = min(inst, key=lambda r: r["samples"]), max(inst, key=lambda r: r["samples"])
        if hi["samples"] >= RATIO_WARN * lo["samples"]:
            out.append(
                Finding(
                    "balance",
                    Severity.warn,
                    f"{hi['set']} gives {hi['samples']} samples per epoch ({hi['images']} images x {hi['repeats']}), "
                    f"{lo['set']} only {lo['samples']} ({lo['images']} x {lo['repeats']}): the first dominates",
                    f"raise {lo['set']}'s repeats (folder prefix or repeats) to about "
                    f"{max(1, round(hi['samples'] / lo['images']))}, or add images to it",
                    [],
                    {"sets": inst},
                )
            )
    for cls in [r for r in rows if r["kind"] == "class"]:
        matching = [r for r in inst if r["class"] == cls["class"]] or inst
        wanted = sum(r["images"] for r in matching)
        if cls["images"] < wanted:
            out.append(
                Finding(
                    "balance",
                    Severity.warn,
                    f"class set {cls['set']} has {cls['images']} images for {wanted} instance images: each class "
                    "image is repeated over and over (the prior is learnt, too)",
                    f"give it at least {wanted} images (commonly 100-200 per subject); prior.enabled can generate them",
                    [],
                    {"class_images": cls["images"], "instance_images": wanted},
                )
            )
    return out
