"""Train with DreamBooth / LoRA: `python train.py +experiment=quickstart` (see README.md)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import sdft.config  # noqa: F401  (registers the config schema)
from sdft.errors import SdftError, TrainingStopped


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from sdft.run.train import optimized_value, run

    try:
        return optimized_value(run(cfg), cfg.get("optimized_metric"))  # what an Optuna sweeper minimises
    except TrainingStopped as err:  # SIGTERM / Ctrl-C after a checkpoint: 143 / 130, never a success code
        logging.getLogger("sdft").warning("%s", err)
        sys.exit(err.exit_code)
    except SdftError as err:  # a problem with the user's input: the message says what to do, no traceback
        logging.getLogger("sdft").error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    from sdft.run.checks import check_overrides

    try:  # a key that is gone stops here naming its new key (Hydra's own error would only call it unknown)
        check_overrides(sys.argv[1:])
    except SdftError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
    main()
