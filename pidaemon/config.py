"""The configuration: every key declared once, with its default, bounds and meaning.

Loading (YAML text to a mapping) is separate from validating (mapping to typed settings) so that
`check-config`, `run` and reload report the very same errors: the file, the key path, what was
expected and, where the YAML says so, the line.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pidaemon.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/pi-infer.yaml")


def setting(default: Any, help: str, *, kind: type | tuple[type, ...] | None = None,
            minimum: float | None = None, maximum: float | None = None,
            choices: tuple[Any, ...] | None = None, nullable: bool = False,
            words: tuple[str, ...] = ()) -> Any:
    """Declare a config key: its default, type, bounds and one-line description.

    `words` are strings accepted besides values of `kind`, such as `auto` for a number.
    """
    meta = {"help": help, "kind": kind or type(default), "minimum": minimum, "maximum": maximum,
            "choices": choices, "nullable": nullable, "words": words}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CameraConfig:
    device: str = setting("/dev/video0", "V4L2 device path, device index (0), network camera "
                          "URL, video file, or csi (csi:1 for a second) for a Raspberry Pi camera",
                          kind=(str, int))
    backend: str = setting("auto", "auto, v4l2, picamera2 or file; auto reads Raspberry Pi cameras "
                           "(csi, or the Pi's CSI receiver node) with picamera2",
                           choices=("auto", "v4l2", "picamera2", "file"))
    width: int = setting(224, "frame width to ask the camera for", minimum=16, maximum=8192)
    height: int = setting(224, "frame height to ask the camera for", minimum=16, maximum=8192)
    fps: float = setting(36.0, "frames per second to ask for; video files are paced at this rate",
                         kind=(int, float), minimum=0.1, maximum=1000)
    fourcc: str | None = setting(None, "pixel format such as MJPG or YUYV; null keeps the driver's",
                                 kind=str, nullable=True)
    loop: bool = setting(False, "restart a video file at its end instead of stopping")
    stall_timeout: float = setting(5.0, "seconds without a frame before the camera is reopened",
                                   kind=(int, float), minimum=0.5, maximum=3600)


@dataclass(frozen=True)
class QueueConfig:
    size: int = setting(1, "frames waiting for inference; the oldest is dropped when full",
                        minimum=1, maximum=64)


@dataclass(frozen=True)
class InferenceConfig:
    threads: int | str = setting("auto", "torch intra-op threads; auto: the CPUs this process "
                                 "may use, less one for capture", kind=int, minimum=1,
                                 maximum=64, words=("auto",))
    engine: str = setting("auto", "quantized engine; auto is qnnpack on Arm, x86 elsewhere",
                          choices=("auto", "qnnpack", "x86", "fbgemm"))
    jit: bool = setting(True, "compile the model with TorchScript and cache the result")
    max_consecutive_errors: int = setting(10, "failed frames in a row before the daemon exits",
                                          minimum=1, maximum=100000)


@dataclass(frozen=True)
class ModelConfig:
    name: str = setting("mobilenet_v2", "model architecture", choices=("mobilenet_v2",))
    weights: str | None = setting(None, "local state_dict file; null downloads torchvision's",
                                  kind=str, nullable=True)
    torchscript: str | None = setting(None, "your own TorchScript model file (needs labels)",
                                      kind=str, nullable=True)
    labels: str | None = setting(None, "labels file, one per line in output order",
                                 kind=str, nullable=True)
    top_k: int = setting(5, "predictions reported per frame", minimum=1, maximum=100)
    cache_dir: str | None = setting(None, "compiled model cache; null uses $CACHE_DIRECTORY or "
                                    "~/.cache/pi-infer", kind=str, nullable=True)


@dataclass(frozen=True)
class OutputConfig:
    interval: float = setting(1.0, "seconds between stats lines", kind=(int, float),
                              minimum=0.1, maximum=3600)
    every_frame: bool = setting(False, "also log the top-k of every frame")
    min_score: float = setting(0.0, "leave out predictions scoring below this",
                               kind=(int, float), minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class MqttConfig:
    host: str | None = setting(None, "broker host name or address; null turns MQTT off",
                               kind=str, nullable=True)
    port: int = setting(1883, "broker port (8883 is usual with tls)", minimum=1, maximum=65535)
    topic_prefix: str = setting("pi-infer", "topics are <prefix>/<node>/status, availability and "
                                "prediction")
    node_id: str | None = setting(None, "this camera's name in topics; null uses the host name",
                                  kind=str, nullable=True)
    client_id: str | None = setting(None, "client id, unique on the broker; null uses "
                                    "pi-infer-<node>", kind=str, nullable=True)
    username: str | None = setting(None, "user name; null connects anonymously", kind=str,
                                   nullable=True)
    password_file: str | None = setting(None, "file holding the password; a bare name is looked "
                                        "up in $CREDENTIALS_DIRECTORY", kind=str, nullable=True)
    tls: bool = setting(False, "connect with TLS and check the broker's certificate")
    ca_file: str | None = setting(None, "CA certificates for tls; null uses the system's",
                                  kind=str, nullable=True)
    qos: int = setting(0, "QoS of status and prediction messages", choices=(0, 1, 2))
    retain_status: bool = setting(True, "the broker keeps the latest status for new subscribers")
    every_frame: bool = setting(False, "publish every frame's top-k, not only changes of top-1")
    keepalive: int = setting(30, "seconds between keep-alive pings; a dead link shows after 1.5x",
                             minimum=5, maximum=3600)
    buffer: int = setting(1000, "predictions held while the broker is unreachable; older ones are "
                          "dropped (and counted) beyond this", minimum=1, maximum=100000)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(False, "serve Prometheus /metrics and /healthz over HTTP")
    listen: str = setting("127.0.0.1:9108", "ADDRESS:PORT to serve on; port 0 picks a free one")


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def with_source(self, source: str | None) -> Config:
        """The same config reading from `source` (the `--source` option) instead."""
        if source is None:
            return self
        device: str | int = int(source) if source.isdigit() else source
        return dataclasses.replace(self, camera=dataclasses.replace(self.camera, device=device))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "camera": CameraConfig,
    "queue": QueueConfig,
    "inference": InferenceConfig,
    "model": ModelConfig,
    "output": OutputConfig,
    "mqtt": MqttConfig,
    "metrics": MetricsConfig,
}

# Optional features and the module each needs, with how to get it.
OPTIONAL_MODULES = {
    "mqtt": ("paho.mqtt.client", "needs paho-mqtt: pip install 'pi-infer[mqtt]' (into "
                                 "/opt/pi-infer/venv for the service)"),
    "metrics": ("prometheus_client", "needs prometheus-client: pip install 'pi-infer[metrics]' "
                                     "(into /opt/pi-infer/venv for the service)"),
}
PICAMERA2_MISSING = ("picamera2 needs the python3-picamera2 package (sudo apt install "
                     "python3-picamera2) and a venv with --system-site-packages")


def parse_listen(text: str) -> tuple[str, int]:
    """`ADDRESS:PORT` (`[::1]:9108` for IPv6) as a socket address; ValueError if malformed.

    An IP address, not a host name: what to listen on should not depend on DNS at start-up.
    """
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not port.isdigit() or int(port) > 65535 or (":" in host and not bracketed):
        raise ValueError(text)
    return str(ipaddress.ip_address(host)), int(port)


def _expected(meta: dict[str, Any]) -> str:
    """What a key takes, for messages: `auto or a whole number`."""
    return " or ".join([*meta["words"], _type_name(meta["kind"])])


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if float in kinds:
        kinds = tuple(k for k in kinds if k is not int)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _line_numbers(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML mapping to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = (*path, str(key_node.value))
                lines[key_path] = key_node.start_mark.line + 1
                walk(value_node, key_path)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


class _Problem:
    """Builds a ConfigError message that names the file, key path and line."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def __call__(self, path: tuple[str, ...], message: str) -> ConfigError:
        where = self.source
        line = self.lines.get(path)
        if line is not None:
            where += f", line {line}"
        key = ".".join(p if p.isprintable() and p else repr(p) for p in path) or "(top level)"
        return ConfigError(f"{where}: {key}: {message}")


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{hint}valid keys: {', '.join(options)}"


def _check_value(value: Any, meta: dict[str, Any], path: tuple[str, ...], problem: _Problem) -> Any:
    if value is None:
        if meta["nullable"]:
            return None
        raise problem(path, f"must be {_expected(meta)}, not empty (null)")
    if isinstance(value, str) and value in meta["words"]:
        return value
    kind = meta["kind"]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # YAML `yes`/`1` must not pass as numbers or booleans of the other sort.
    if isinstance(value, bool) and bool not in kinds:
        raise problem(path, f"must be {_expected(meta)}, not {str(value).lower()}")
    if not isinstance(value, kinds):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise problem(path, f"must be {_expected(meta)}, got {shown}")
    if isinstance(value, float) and value != value:
        raise problem(path, "must be a number, got NaN")
    if meta["choices"] is not None and value not in meta["choices"]:
        options = ", ".join(str(c) for c in meta["choices"])
        raise problem(path, f"must be one of {options}, got {value!r}")
    if meta["minimum"] is not None and not isinstance(value, str) and value < meta["minimum"]:
        raise problem(path, f"must be at least {meta['minimum']}, got {value}")
    if meta["maximum"] is not None and not isinstance(value, str) and value > meta["maximum"]:
        raise problem(path, f"must be at most {meta['maximum']}, got {value}")
    if isinstance(value, str) and not value.strip():
        raise problem(path, "must not be an empty string")
    if float in kinds and isinstance(value, int):
        value = float(value)
    return value


def validate(data: Any, source: str = "<config>", text: str = "") -> Config:
    """Turn a parsed YAML document into a Config, or raise ConfigError naming the problem."""
    problem = _Problem(source, _line_numbers(text))
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise problem((), f"must be a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(data).__name__}")
    sections: dict[str, Any] = {}
    for section_name, section_data in data.items():
        if section_name not in SECTIONS:
            name = str(section_name)
            raise problem((name,), f"unknown section; {_closest(name, list(SECTIONS))}")
        cls = SECTIONS[section_name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if section_data is None:
            section_data = {}
        if not isinstance(section_data, dict):
            raise problem((section_name,), f"must be a mapping of keys ({', '.join(fields)}), "
                                           f"got {type(section_data).__name__}")
        values: dict[str, Any] = {}
        for key, value in section_data.items():
            path = (section_name, str(key))
            if key not in fields:
                raise problem(path, f"unknown key; {_closest(str(key), list(fields))}")
            values[key] = _check_value(value, dict(fields[key].metadata), path, problem)
        sections[section_name] = cls(**values)
    config = Config(**sections)
    _check_combinations(config, problem)
    return config


def _check_combinations(config: Config, problem: _Problem) -> None:
    model = config.model
    if model.torchscript is not None and model.labels is None:
        raise problem(("model", "labels"), "is required with model.torchscript: a file with one "
                                           "label per line, in the model's output order")
    if model.torchscript is not None and model.weights is not None:
        raise problem(("model", "weights"), "cannot be used with model.torchscript; set only one")
    _check_camera(config.camera, problem)
    _check_mqtt(config.mqtt, problem)
    if config.metrics.enabled:
        try:
            parse_listen(config.metrics.listen)
        except ValueError:
            raise problem(("metrics", "listen"), f"must be ADDRESS:PORT such as 127.0.0.1:9108 "
                                                 f"or [::1]:9108, got {config.metrics.listen!r}"
                          ) from None
        _check_module("metrics", ("metrics", "enabled"), problem)


def _check_camera(camera: CameraConfig, problem: _Problem) -> None:
    """A Pi camera needs picamera2; saying so here makes check-config and reload catch it."""
    from pidaemon import picamera2_source

    csi = picamera2_source.csi_index(camera.device) is not None
    if csi and camera.backend in ("v4l2", "file"):
        raise problem(("camera", "backend"), f"{camera.backend} cannot read {camera.device}, "
                                             f"a Raspberry Pi camera; use auto or picamera2")
    if (csi or camera.backend == "picamera2") and not picamera2_source.importable():
        raise problem(("camera", "backend"), PICAMERA2_MISSING)


def _check_mqtt(mqtt: MqttConfig, problem: _Problem) -> None:
    if mqtt.host is None:
        return
    for key in ("topic_prefix", "node_id"):
        value = getattr(mqtt, key)
        if value is not None and (set(value) & set("+#\0") or value.startswith("/")
                                  or value.endswith("/") or "//" in value):
            raise problem(("mqtt", key), f"must be a topic without +, #, or empty levels, got "
                                         f"{value!r}")
    if mqtt.node_id is not None and "/" in mqtt.node_id:
        raise problem(("mqtt", "node_id"), f"must be one topic level (no /), got {mqtt.node_id!r}")
    if mqtt.password_file is not None and mqtt.username is None:
        raise problem(("mqtt", "password_file"), "needs mqtt.username as well")
    if mqtt.ca_file is not None and not mqtt.tls:
        raise problem(("mqtt", "ca_file"), "is only used with mqtt.tls: true")
    _check_module("mqtt", ("mqtt", "host"), problem)


def _check_module(feature: str, path: tuple[str, ...], problem: _Problem) -> None:
    module, advice = OPTIONAL_MODULES[feature]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        found = False
    if not found:
        raise problem(path, advice)


def parse(text: str, source: str) -> Config:
    """Validate YAML text; `source` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {reason}") from None
    return validate(data, source, text)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read the config file; the default path may be missing (built-in defaults), others not."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it (see etc/pi-infer.yaml) or pass "
                          f"another --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}; check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse(text, str(path))


def to_yaml(config: Config) -> str:
    """The effective config as YAML, in declaration order."""
    return yaml.safe_dump(config.as_dict(), sort_keys=False, default_flow_style=False)


def describe() -> list[tuple[str, Any, str]]:
    """(key path, default, help) for every key: the single source of the documented defaults."""
    rows = []
    for section_name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{section_name}.{f.name}", f.default, f.metadata["help"]))
    return rows
