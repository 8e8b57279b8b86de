"""Validating: a parsed YAML mapping to a typed Config, or one ConfigError naming the key.

Every check lives here so that `check-config`, `run` and reload refuse exactly the same files.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from typing import Any

from pidaemon.config.cameras import parse_cameras
from pidaemon.config.credentials import CredentialError, read_secret
from pidaemon.config.regions import parse_regions
from pidaemon.config.schema import (
    OPTIONAL_MODULES,
    PICAMERA2_MISSING,
    SECTIONS,
    CameraConfig,
    Config,
    MqttConfig,
    WebConfig,
    csi_index,
    module_available,
)
from pidaemon.errors import ConfigError


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


class _Problem:
    """Builds a ConfigError message that names the file, key path and line."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def __call__(self, path: tuple[str, ...], message: str) -> ConfigError:
        where = self.source
        # A missing key has no line: name the line of the mapping that lacks it.
        line = next((self.lines[path[:n]] for n in range(len(path), 0, -1)
                     if path[:n] in self.lines), None)
        if line is not None:
            where += f", line {line}"
        key = ".".join(p if p.isprintable() and p else repr(p) for p in path) or "(top level)"
        return ConfigError(f"{where}: {key}: {message}")


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{hint}valid keys: {', '.join(options)}"


FLOAT_LITERAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _check_value(value: Any, meta: dict[str, Any], path: tuple[str, ...], problem: _Problem) -> Any:
    if value is None:
        if meta["nullable"]:
            return None
        raise problem(path, f"must be {_expected(meta)}, not empty (null)")
    if isinstance(value, str) and value in meta["words"]:
        return value
    kind = meta["kind"]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, str) and FLOAT_LITERAL.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e1 and 1.5e3 as strings; YAML 1.2 and JSON do not
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


def validate(data: Any, source: str = "<config>",
             lines: dict[tuple[str, ...], int] | None = None) -> Config:
    """Turn a parsed YAML document into a Config, or raise ConfigError naming the problem.

    `lines` maps key paths to lines of the file, for the messages.
    """
    problem = _Problem(source, lines or {})
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise problem((), f"must be a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(data).__name__}")
    sections: dict[str, Any] = {}
    for section_name, section_data in data.items():
        if section_name == "regions":
            sections["regions"] = parse_regions(section_data, problem)
            continue
        if section_name == "cameras":
            sections["cameras"] = parse_cameras(section_data, problem, _read_section)
            continue
        if section_name not in SECTIONS:
            name = str(section_name)
            raise problem((name,), f"unknown section; "
                                   f"{_closest(name, [*SECTIONS, 'regions', 'cameras'])}")
        sections[section_name] = _read_section(SECTIONS[section_name], section_data,
                                               (section_name,), problem)
    if "cameras" in sections:
        for key in ("camera", "regions"):
            if key in data:
                raise problem((key,), f"cannot be used with cameras:; put it under "
                                      f"cameras.<name>{'' if key == 'camera' else '.regions'} "
                                      f"(one entry per camera)")
    config = Config(**sections)
    _check_combinations(config, problem)
    return config


def _read_section(cls: type, data: Any, path: tuple[str, ...], problem: _Problem) -> Any:
    """One mapping of declared keys (a section, or one of `cameras:`) as `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise problem(path, f"must be a mapping of keys ({', '.join(fields)}), "
                            f"got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_path = (*path, str(key))
        if key not in fields:
            raise problem(key_path, f"unknown key; {_closest(str(key), list(fields))}")
        values[key] = _check_value(value, dict(fields[key].metadata), key_path, problem)
    return cls(**values)


def _check_combinations(config: Config, problem: _Problem) -> None:
    model = config.model
    if model.torchscript is not None and model.labels is None:
        raise problem(("model", "labels"), "is required with model.torchscript: a file with one "
                                           "label per line, in the model's output order")
    if model.torchscript is not None and model.weights is not None:
        raise problem(("model", "weights"), "cannot be used with model.torchscript; set only one")
    for feed in config.feeds():
        _check_camera(feed.camera, ("cameras", feed.name) if feed.name else ("camera",), problem)
    _check_mqtt(config.mqtt, problem)
    if config.metrics.enabled:
        try:
            parse_listen(config.metrics.listen)
        except ValueError:
            raise problem(("metrics", "listen"), f"must be ADDRESS:PORT such as 127.0.0.1:9108 "
                                                 f"or [::1]:9108, got {config.metrics.listen!r}"
                          ) from None
        _check_module("metrics", ("metrics", "enabled"), problem)
    _check_web(config.web, problem)


def _check_camera(camera: CameraConfig, path: tuple[str, ...], problem: _Problem) -> None:
    """A Pi camera needs picamera2; saying so here makes check-config and reload catch it."""
    csi = csi_index(camera.device) is not None
    if csi and camera.backend in ("v4l2", "file"):
        raise problem((*path, "backend"), f"{camera.backend} cannot read {camera.device}, "
                                             f"a Raspberry Pi camera; use auto or picamera2")
    if (csi or camera.backend == "picamera2") and not module_available("picamera2"):
        raise problem((*path, "backend"), PICAMERA2_MISSING)


def _check_mqtt(mqtt: MqttConfig, problem: _Problem) -> None:
    if mqtt.host is None:
        return
    for key in ("topic_prefix", "node_id", "discovery_prefix"):
        value = getattr(mqtt, key)
        if value is not None and (set(value) & set("+#\0") or value.startswith("/")
                                  or value.endswith("/") or "//" in value):
            raise problem(("mqtt", key), f"must be a topic without +, #, or empty levels, got "
                                         f"{value!r}")
    if mqtt.node_id is not None and "/" in mqtt.node_id:
        raise problem(("mqtt", "node_id"), f"must be one topic level (no /), got {mqtt.node_id!r}")
    if mqtt.password_file is not None and mqtt.username is None:
        raise problem(("mqtt", "password_file"), "needs mqtt.username as well")
    if mqtt.password_file is not None:
        try:  # as `run` reads it, so check-config and reload refuse what run would
            read_secret(mqtt.password_file)
        except CredentialError as exc:
            raise problem(("mqtt", "password_file"), str(exc)) from None
    if mqtt.ca_file is not None and not mqtt.tls:
        raise problem(("mqtt", "ca_file"), "is only used with mqtt.tls: true")
    _check_module("mqtt", ("mqtt", "host"), problem)


def _check_web(web: WebConfig, problem: _Problem) -> None:
    """The page shows the camera: beyond loopback only behind a password."""
    if not web.enabled:
        return
    try:
        host, _ = parse_listen(web.listen)
    except ValueError:
        raise problem(("web", "listen"), f"must be ADDRESS:PORT such as 127.0.0.1:8080 or "
                                         f"0.0.0.0:8080, got {web.listen!r}") from None
    if web.password_file is None and not ipaddress.ip_address(host).is_loopback:
        raise problem(("web", "password_file"), f"is required to listen on {web.listen}, beyond "
                                                f"loopback: name a file holding a password")
    if web.password_file is not None:
        try:
            read_secret(web.password_file)
        except CredentialError as exc:
            raise problem(("web", "password_file"), str(exc)) from None
    if any(c in web.username for c in ":\r\n\0"):
        raise problem(("web", "username"), "must not contain a colon or a line break")


def _check_module(feature: str, path: tuple[str, ...], problem: _Problem) -> None:
    module, advice = OPTIONAL_MODULES[feature]
    if not module_available(module):
        raise problem(path, advice)
