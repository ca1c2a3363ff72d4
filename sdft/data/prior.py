"""Prior preservation's class examples per concept: the class sets given as images, else class images generated
(sdft/data/class_images.py) for each instance concept's class prompt."""

from __future__ import annotations

import logging
from pathlib import Path

from sdft.data.class_images import default_class_dir, ensure_class_images
from sdft.data.concepts import kohya_subfolders, parse_kohya_name
from sdft.data.datamodule import DatasetReport, class_examples

log = logging.getLogger(__name__)


def prior_examples(cfg, pipe, report: DatasetReport) -> list:
    """The run's class examples, for every concept (`cfg` is the whole run config; `report` the phase's scan,
    sdft/data/phase_data.py).

    Class sets given as images (kohya is_reg subsets, `<repeats>_<class>` folders in data.class_dir) are always
    used, as kohya does. With prior.enabled, each instance concept with a class prompt and no such set gets
    prior.num_class_images generated (resumable, reused, topped up) in its class_dir
    (default: datasets/class_images/<model>/<class prompt>_<resolution>).
    """
    settings = report.settings
    examples = list(report.reg_examples)
    if not cfg.prior.enabled:
        if examples:
            log.info(
                "Class images: %d given as folders (is_reg / <repeats>_<class>), used with weight "
                "prior.loss_weight=%s.",
                len(examples),
                cfg.prior.loss_weight,
            )
        return examples
    given = {ex.class_key for ex in examples}
    done = set()
    for concept in report.concepts:
        if concept.is_reg or not concept.class_prompt or concept.class_key in given or concept.class_key in done:
            continue
        done.add(concept.class_key)
        folder = concept.class_dir
        if folder is not None and (parse_kohya_name(concept.folder.name) or kohya_subfolders(Path(folder))):
            folder = Path(folder) / f"1_{concept.class_prompt}"  # a kohya reg folder: `<repeats>_<class>`
        if folder is None:
            folder = default_class_dir(cfg.model.path, concept.class_prompt, settings.resolution)
        paths = ensure_class_images(
            pipe,
            Path(folder).expanduser(),
            concept.class_prompt,
            cfg.prior.num_class_images,
            settings.resolution,
            cfg.seed,
            cfg.prior.generation_batch_size,
            cfg.prior.generation_steps,
            cfg.prior.generation_guidance,
            cfg.prior.negative_prompt,
        )
        examples += class_examples(paths[: cfg.prior.num_class_images], concept.class_prompt, concept)
    if not examples:
        log.warning("prior.enabled: no concept has a class prompt; training without class images.")
    return examples
