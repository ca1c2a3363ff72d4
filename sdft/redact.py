"""Secrets kept out of written files: the run config as JSON (LoRA metadata `sdft_config`) without keys named like
secrets and without the values of secret-named environment variables."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

# Names of secrets (config keys, environment variables): HF_TOKEN, hf_token, WANDB_API_KEY, *_SECRET, *_PASSWORD...
# but not e.g. data.keep_tokens or caption_key-like settings.
SECRET_NAME = re.compile(
    r"(^|_)(token|auth_?token|api_?key|access_?key|secret(_?key)?|password|passwd|credentials?)$", re.IGNORECASE
)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact(v, secrets) for k, v in value.items() if not SECRET_NAME.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "<redacted>")
    return value


def config_json(config: Any) -> str:
    """The run config as JSON, without keys named like token/key/secret/password or secret env values."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = OmegaConf.structured(config)
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=True, enum_to_str=True)
    secrets = [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8]
    return json.dumps(_redact(config, secrets), sort_keys=True, default=str)
