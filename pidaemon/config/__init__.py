"""The configuration: declared once (schema), validated (validate), read from YAML (loader)."""

from pidaemon.config.loader import load, parse, to_yaml
from pidaemon.config.schema import (
    DEFAULT_CONFIG_PATH,
    PICAMERA2_MISSING,
    SECTIONS,
    CameraConfig,
    CollectConfig,
    Config,
    InferenceConfig,
    Key,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    OutputConfig,
    QueueConfig,
    Reload,
    WebConfig,
    changed_keys,
    csi_index,
    keys,
    module_available,
)
from pidaemon.config.validate import parse_listen, validate

__all__ = ["DEFAULT_CONFIG_PATH", "PICAMERA2_MISSING", "SECTIONS", "CameraConfig",
           "CollectConfig", "Config", "InferenceConfig", "Key", "MetricsConfig", "ModelConfig",
           "MqttConfig", "OutputConfig", "QueueConfig", "Reload", "WebConfig", "changed_keys",
           "csi_index", "keys", "load", "module_available", "parse", "parse_listen", "to_yaml",
           "validate"]
