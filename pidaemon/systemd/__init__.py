"""Talking to systemd: sd_notify (readiness, status, watchdog) and the native journal protocol."""

from pidaemon.systemd.notify import Notifier

__all__ = ["Notifier"]
