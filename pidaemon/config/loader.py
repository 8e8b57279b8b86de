"""Loading: the config file's bytes to YAML to a validated Config, and back to YAML."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pidaemon.config import yamlsafe
from pidaemon.config.schema import DEFAULT_CONFIG_PATH, Config
from pidaemon.config.validate import validate
from pidaemon.errors import ConfigError


def parse(text: str, source: str) -> Config:
    """Validate YAML text; `source` names the file in errors."""
    data, lines = yamlsafe.load_mapping(text, source)
    return validate(data, source, lines)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read the config file; the default path may be missing (built-in defaults), others not."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        text = yamlsafe.read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it (see etc/pi-infer.yaml) or pass "
                          f"another --config") from None
    return parse(text, str(path))


def to_yaml(config: Config) -> str:
    """The effective config as YAML, in declaration order."""
    return yaml.safe_dump(config.as_dict(), sort_keys=False, default_flow_style=False)


