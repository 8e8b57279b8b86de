"""The configuration: every key declared once, with its default, bounds and meaning.

Loading (YAML text to a mapping) is separate from validating (mapping to typed settings) so that
`check-config`, `run` and reload report the very same errors: the file, the key path, what was
expected and, where the YAML says so, the line.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pidaemon.config.regions import Region, as_plain, changed_regions
from pidaemon.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/pi-infer.yaml")


class Reload(enum.Enum):
    """What a SIGHUP does with a changed key; the reload code acts on this and nothing else."""

    LIVE = "applied live"
    CAMERA = "reopens the camera"
    MODEL = "reloads the model"
    RESTART = "needs a restart"


def setting(default: Any, help: str, *, on_reload: Reload,
            kind: type | tuple[type, ...] | None = None,
            minimum: float | None = None, maximum: float | None = None,
            choices: tuple[Any, ...] | None = None, nullable: bool = False,
            words: tuple[str, ...] = ()) -> Any:
    """Declare a config key: its default, type, bounds, meaning and what a reload does with it.

    `words` are strings accepted besides values of `kind`, such as `auto` for a number.
    """
    meta = {"help": help, "kind": kind or type(default), "minimum": minimum, "maximum": maximum,
            "choices": choices, "nullable": nullable, "words": words, "on_reload": on_reload}
    return field(default=default, metadata=meta)


MAX_DEVICE_INDEX = 1023
CAMERA, LIVE, MODEL, RESTART = Reload.CAMERA, Reload.LIVE, Reload.MODEL, Reload.RESTART


@dataclass(frozen=True)
class CameraConfig:
    device: str = setting(
        "/dev/video0", "V4L2 device path, device index (0), network camera URL (rtsp://...) or "
        "video file; csi (csi:1 for a second one) for a Raspberry Pi ribbon-cable camera.",
        kind=(str, int), minimum=0, maximum=MAX_DEVICE_INDEX, on_reload=CAMERA)
    backend: str = setting(
        "auto", "How to read it: auto, v4l2, picamera2 or file. auto uses picamera2 for csi and "
        "for the Pi's CSI receiver node (/dev/video0 on a Pi with a camera module), V4L2 for "
        "other /dev nodes, and the video file reader otherwise. picamera2 needs `sudo apt "
        "install python3-picamera2` and a venv made with --system-site-packages (make install "
        "does that when it is present).",
        choices=("auto", "v4l2", "picamera2", "file"), on_reload=CAMERA)
    width: int = setting(224, "Frame width to ask the camera for; the log shows what it granted.",
                         minimum=16, maximum=8192, on_reload=CAMERA)
    height: int = setting(224, "Frame height to ask the camera for.", minimum=16, maximum=8192,
                          on_reload=CAMERA)
    fps: float = setting(36.0, "Frames per second to ask for; video files are paced at this rate.",
                         kind=(int, float), minimum=0.1, maximum=1000, on_reload=CAMERA)
    fourcc: str | None = setting(
        None, "Pixel format such as MJPG or YUYV; null keeps the driver's. USB webcams at "
        "640x480 and above often need MJPG to reach full frame rate.",
        kind=str, nullable=True, on_reload=CAMERA)
    loop: bool = setting(False, "Restart a video file at its end instead of stopping.",
                         on_reload=CAMERA)
    stall_timeout: float = setting(5.0, "Seconds without a frame before the camera is reopened.",
                                   kind=(int, float), minimum=0.5, maximum=3600, on_reload=CAMERA)


@dataclass(frozen=True)
class NamedCamera:
    """One camera of `cameras:` (name None: the single `camera:`), with its own regions."""

    name: str | None
    camera: CameraConfig
    regions: tuple[Region, ...] = ()

    def as_plain(self) -> dict[str, Any]:
        entry: dict[str, Any] = dataclasses.asdict(self.camera)
        if self.regions:
            entry["regions"] = as_plain(self.regions)
        return entry


@dataclass(frozen=True)
class QueueConfig:
    size: int = setting(1, "Frames waiting for inference; the oldest is dropped when full (1 = "
                        "always the freshest).", minimum=1, maximum=64, on_reload=LIVE)


@dataclass(frozen=True)
class InferenceConfig:
    threads: int | str = setting(
        "auto", "Model threads (torch intra-op, or the xnnpack engine's pool), 1 to 64; auto: "
        "the CPUs this process may use (affinity, cgroup quota) less one for capture, so 1 on 2 "
        "CPUs and 3 on 4, logged at start.",
        kind=int, minimum=1, maximum=64, words=("auto",), on_reload=LIVE)
    engine: str = setting("auto", "Quantized engine: auto (qnnpack on Arm, x86 elsewhere), "
                          "qnnpack, x86, fbgemm or xnnpack (ExecuTorch's XNNPACK int8, the "
                          "built-in model only, never chosen by auto; see "
                          "docs/xnnpack-engine.md).",
                          choices=("auto", "qnnpack", "x86", "fbgemm", "xnnpack"),
                          on_reload=MODEL)
    jit: bool = setting(True, "Compile the model with TorchScript and cache it (fast warm "
                        "starts); xnnpack always caches its program.", on_reload=MODEL)
    max_consecutive_errors: int = setting(
        10, "Failed frames in a row before the daemon exits (and systemd restarts it).",
        minimum=1, maximum=100000, on_reload=LIVE)


@dataclass(frozen=True)
class ModelConfig:
    name: str = setting("mobilenet_v2", "Model architecture.", choices=("mobilenet_v2",),
                        on_reload=MODEL)
    weights: str | None = setting(
        None, "Local state_dict file; null downloads torchvision's pretrained weights "
        "(IMAGENET1K_QNNPACK_V1) once.", kind=str, nullable=True, on_reload=MODEL)
    torchscript: str | None = setting(None, "Your own TorchScript model file (needs labels).",
                                      kind=str, nullable=True, on_reload=MODEL)
    labels: str | None = setting(None, "Labels file, one per line in output order; null uses "
                                 "the ImageNet names.", kind=str, nullable=True, on_reload=MODEL)
    top_k: int = setting(5, "Predictions reported per frame.", minimum=1, maximum=100,
                         on_reload=LIVE)
    cache_dir: str | None = setting(
        None, "Compiled model cache; null uses $CACHE_DIRECTORY (/var/cache/pi-infer under "
        "systemd) or ~/.cache/pi-infer.", kind=str, nullable=True, on_reload=MODEL)


@dataclass(frozen=True)
class OutputConfig:
    interval: float = setting(1.0, "Seconds between stats lines (fps, latency, drops, top-1) and "
                              "systemd STATUS updates.", kind=(int, float), minimum=0.1,
                              maximum=3600, on_reload=LIVE)
    every_frame: bool = setting(False, "Also log the top-k of every frame.", on_reload=LIVE)
    min_score: float = setting(0.0, "Leave out predictions scoring below this.",
                               kind=(int, float), minimum=0.0, maximum=1.0, on_reload=LIVE)


@dataclass(frozen=True)
class MqttConfig:
    host: str | None = setting(
        None, "Broker host name or address; null turns MQTT off. Topics under "
        "<topic_prefix>/<node>/: availability (online/offline, retained; offline is also the "
        "last will), status (JSON stats every output.interval), prediction (JSON top-k when the "
        "top-1 class changes).", kind=str, nullable=True, on_reload=RESTART)
    port: int = setting(1883, "Broker port (8883 is usual with tls).", minimum=1, maximum=65535,
                        on_reload=RESTART)
    topic_prefix: str = setting("pi-infer", "First level of every topic.", on_reload=RESTART)
    node_id: str | None = setting(None, "This camera's name in topics; null uses the host name "
                                  "(give each Pi its own).", kind=str, nullable=True,
                                  on_reload=RESTART)
    client_id: str | None = setting(None, "Client id, unique on the broker; null uses "
                                    "pi-infer-<node>.", kind=str, nullable=True,
                                    on_reload=RESTART)
    username: str | None = setting(None, "User name; null connects anonymously.", kind=str,
                                   nullable=True, on_reload=RESTART)
    password_file: str | None = setting(
        None, "File holding the password (keep it out of this file). A bare name such as "
        "mqtt-password is looked up in $CREDENTIALS_DIRECTORY, for a unit drop-in with "
        "LoadCredential=mqtt-password:/etc/pi-infer/mqtt-password.",
        kind=str, nullable=True, on_reload=RESTART)
    tls: bool = setting(False, "Connect with TLS and check the broker's certificate.",
                        on_reload=RESTART)
    ca_file: str | None = setting(None, "CA certificates for tls; null uses the system's.",
                                  kind=str, nullable=True, on_reload=RESTART)
    qos: int = setting(0, "QoS of status and prediction messages: 0, 1 or 2.",
                       choices=(0, 1, 2), on_reload=RESTART)
    retain_status: bool = setting(True, "Let the broker keep the latest status for new "
                                  "subscribers.", on_reload=RESTART)
    every_frame: bool = setting(False, "Publish every frame's top-k, not only changes of the "
                                "top-1 class.", on_reload=RESTART)
    keepalive: int = setting(30, "Seconds between keep-alive pings; a dead link is noticed after "
                             "1.5 times this.", minimum=5, maximum=3600, on_reload=RESTART)
    discovery: bool = setting(
        False, "Announce each region as a Home Assistant sensor (MQTT discovery): one device "
        "config at <discovery_prefix>/device/<node>/config, sent again when Home Assistant "
        "says online on <discovery_prefix>/status.", on_reload=RESTART)
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix.",
                                    on_reload=RESTART)
    buffer: int = setting(
        1000, "Predictions held while the broker is unreachable; older ones are dropped (and "
        "counted in the status and the log) beyond this. Capture and inference never wait for "
        "the broker.", minimum=1, maximum=100000, on_reload=RESTART)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(False, "Serve Prometheus metrics at http://<listen>/metrics and a "
                            "health check at /healthz (200 while every pipeline thread makes "
                            "progress and frames flow, else 503).", on_reload=RESTART)
    listen: str = setting("127.0.0.1:9108", "ADDRESS:PORT to serve on; port 0 picks a free one. "
                          "Loopback by default: there is no authentication. 0.0.0.0:9108 lets "
                          "a Prometheus server on the network scrape it.", on_reload=RESTART)


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = setting(False, "Serve a live page at http://<listen>/: the camera's frame "
                            "with the top-k drawn on it, fps and latency graphs, camera state "
                            "and counters; /stream.mjpg, /snapshot.jpg and /api/status (the "
                            "MQTT status JSON) too. Frames are encoded only while someone "
                            "watches.", on_reload=RESTART)
    listen: str = setting("127.0.0.1:8080", "ADDRESS:PORT to serve on; port 0 picks a free one. "
                          "An address beyond loopback (0.0.0.0:8080 for a phone on the same "
                          "network) needs web.password_file. The same address as "
                          "metrics.listen serves both from one server.", on_reload=RESTART)
    max_fps: float = setting(5.0, "Most frames per second sent to each viewer; a slow viewer "
                             "gets fewer, never a queue.", kind=(int, float), minimum=0.1,
                             maximum=60, on_reload=RESTART)
    max_clients: int = setting(3, "Viewers (open /stream.mjpg streams) at once; the next one "
                               "gets 503.", minimum=1, maximum=64, on_reload=RESTART)
    username: str = setting("pi-infer", "User name for the browser's login prompt (basic "
                            "authentication) when web.password_file is set.", on_reload=RESTART)
    password_file: str | None = setting(
        None, "File holding the password (or a token sent as Authorization: Bearer); every page "
        "then asks for it. Required beyond loopback. A bare name such as web-password is looked "
        "up in $CREDENTIALS_DIRECTORY, for a unit drop-in with "
        "LoadCredential=web-password:/etc/pi-infer/web-password.",
        kind=str, nullable=True, on_reload=RESTART)


@dataclass(frozen=True)
class CollectConfig:
    directory: str | None = setting(
        None, "Keep examples for `pi-infer train`: the frames the model saw (224x224 JPEG) "
        "saved here as `<label>_<score>_<time>.jpg`, to sort into one folder per label; null "
        "turns collecting off (and costs nothing).", kind=str, nullable=True, on_reload=RESTART)
    interval: float = setting(30.0, "Seconds between saved frames.", kind=(int, float),
                              minimum=0.1, maximum=86400, on_reload=LIVE)
    min_score_below: float = setting(
        0.0, "Also save a frame whose top score is below this (at most one a second): the "
        "frames the model is unsure of teach it most. 0 turns this off.", kind=(int, float),
        minimum=0.0, maximum=1.0, on_reload=LIVE)
    max_files: int = setting(500, "Saved frames kept in the directory; the oldest are removed "
                             "beyond this.", minimum=1, maximum=1000000, on_reload=LIVE)


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    regions: tuple[Region, ...] = ()  # none: the whole frame, as one prediction per frame
    cameras: tuple[NamedCamera, ...] = ()  # none: the single `camera:`

    def feeds(self) -> tuple[NamedCamera, ...]:
        """Every camera with its regions: the named ones, else `camera:` without a name."""
        return self.cameras or (NamedCamera(None, self.camera, self.regions),)
    collect: CollectConfig = field(default_factory=CollectConfig)

    def with_source(self, source: str | None) -> Config:
        """The same config reading from `source` (the `--source` option) instead."""
        if source is None:
            return self
        if self.cameras:
            raise ConfigError("--source: cannot replace the devices of cameras:; give "
                              "--source only with a single camera: section")
        device: str | int = source
        if source.isascii() and source.isdigit():
            device = int(source)
            if device > MAX_DEVICE_INDEX:
                raise ConfigError(f"--source: camera.device: must be at most {MAX_DEVICE_INDEX}, "
                                  f"got {source}")
        return dataclasses.replace(self, camera=dataclasses.replace(self.camera, device=device))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        plain = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS
                 if not (name == "camera" and self.cameras)}
        if self.regions:
            plain["regions"] = as_plain(self.regions)
        if self.cameras:
            plain["cameras"] = {c.name: c.as_plain() for c in self.cameras}
        return plain


SECTIONS: dict[str, type] = {
    "camera": CameraConfig,
    "queue": QueueConfig,
    "inference": InferenceConfig,
    "model": ModelConfig,
    "output": OutputConfig,
    "mqtt": MqttConfig,
    "metrics": MetricsConfig,
    "web": WebConfig,
    "collect": CollectConfig,
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


_CSI = re.compile(r"csi(?::(\d+))?")


def csi_index(device: str | int) -> int | None:
    """The Raspberry Pi camera number `csi` / `csi:N` names, or None for any other device."""
    match = _CSI.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        return None
    return int(match.group(1) or 0)


def module_available(module: str) -> bool:
    """Whether `module` can be imported, without importing it (picamera2 starts libcamera)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


@dataclass(frozen=True)
class Key:
    """One declared key, as the docs and the reload code see it."""

    section: str
    name: str
    default: Any
    help: str
    on_reload: Reload

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"


def keys() -> list[Key]:
    """Every key in declaration order: the single source of defaults, help and reload scope."""
    return [Key(section, f.name, f.default, f.metadata["help"], f.metadata["on_reload"])
            for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def changed_keys(old: Config, new: Config) -> list[Key]:
    """The keys whose value differs between two configs; a changed region counts as one key.

    A region's box and state apply live; a new or changed region model is a model reload.
    """
    changed = [key for key in keys()
               if getattr(getattr(old, key.section), key.name)
               != getattr(getattr(new, key.section), key.name)]
    for name, model_changed in changed_regions(old.regions, new.regions):
        changed.append(Key("regions", name, None, "a region",
                           Reload.MODEL if model_changed else Reload.LIVE))
    return changed + _changed_cameras(old.cameras, new.cameras)


def _changed_cameras(old: tuple[NamedCamera, ...], new: tuple[NamedCamera, ...]) -> list[Key]:
    """A camera added, removed or changed reopens that camera alone; its regions as above."""
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    changed = []
    for name in dict.fromkeys([*before, *after]):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or a.camera != b.camera:
            changed.append(Key("cameras", str(name), None, "a camera", Reload.CAMERA))
        for region, model_changed in changed_regions(a.regions if a else (),
                                                     b.regions if b else ()):
            changed.append(Key(f"cameras.{name}.regions", region, None, "a region",
                               Reload.MODEL if model_changed else Reload.LIVE))
    return changed
