"""Journal output: the native protocol over a real datagram socket, `<N>` prefixes on the
journal stream, and no line lost when the socket goes away."""

import io
import logging
import os
import socket
import struct

import pytest

from pidaemon.eventlog import EventHandler, emit, log
from pidaemon.systemd.journal import JournalSender, encode_field


def parse_entry(datagram: bytes) -> dict[str, str]:
    """Decode the native journal protocol, binary-safe fields included."""
    fields = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            size = struct.unpack("<Q", after[:8])[0]
            fields[line.decode()] = after[8:8 + size].decode()
            rest = after[8 + size + 1:]
    return fields


@pytest.fixture
def journald(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "journal.sock")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


@pytest.fixture
def handler_for():
    """Installs an EventHandler on the pi-infer logger for one test."""
    saved = log.handlers[:], log.level, log.propagate

    def install(handler: EventHandler) -> EventHandler:
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False
        return handler

    yield install
    log.handlers[:], log.level, log.propagate = saved


def test_structured_fields_reach_the_journal_socket(journald, handler_for):
    path, sock = journald
    stream = io.StringIO()
    handler_for(EventHandler("text", stream, JournalSender(path)))
    emit("stats", "stats: fps=9.8 top1=espresso", fps=9.8, latency_p50_ms=4.2, dropped=3,
         label="espresso", score=0.99, labels=["espresso", "cup"])
    entry = parse_entry(sock.recv(65536))
    assert entry["MESSAGE"] == "stats: fps=9.8 top1=espresso"
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "pi-infer"
    assert entry["PI_INFER_EVENT"] == "stats"
    assert entry["PI_INFER_FPS"] == "9.8"
    assert entry["PI_INFER_LATENCY_MS"] == "4.2"
    assert entry["PI_INFER_DROPPED"] == "3"
    assert entry["PI_INFER_LABEL"] == "espresso"
    assert entry["PI_INFER_SCORE"] == "0.99"
    assert "PI_INFER_LABELS" not in entry, "lists stay in the message"
    assert stream.getvalue() == "", "sent once, not duplicated on stdout"


def test_multiline_messages_use_the_binary_form(journald, handler_for):
    path, sock = journald
    handler_for(EventHandler("text", io.StringIO(), JournalSender(path)))
    emit("log", "first line\nsecond line", logging.ERROR)
    entry = parse_entry(sock.recv(65536))
    assert entry["MESSAGE"] == "first line\nsecond line"
    assert entry["PRIORITY"] == "3"


def test_falls_back_to_stdout_when_the_socket_is_gone(journald, handler_for):
    path, sock = journald
    stream = io.StringIO()
    handler_for(EventHandler("text", stream, JournalSender(path)))
    sock.close()
    os.unlink(path)
    emit("camera", "camera: lost /dev/video0", logging.WARNING)
    emit("stats", "stats: fps=1.0")
    assert stream.getvalue().splitlines() == ["camera: lost /dev/video0", "stats: fps=1.0"]


def test_priority_prefixes_on_the_journal_stream(tmp_path, monkeypatch, handler_for):
    out = (tmp_path / "stdout").open("w+")
    st = os.fstat(out.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    handler_for(EventHandler("text", out))
    emit("stats", "stats: fps=1.0")
    emit("camera", "camera: waiting for /dev/video0", logging.WARNING)
    emit("error", "error: broken\ndetail", logging.ERROR)
    out.seek(0)
    assert out.read().splitlines() == ["<6>stats: fps=1.0", "<4>camera: waiting for /dev/video0",
                                       "<3>error: broken", "<3>detail"]


def test_no_prefixes_on_a_terminal_or_pipe(handler_for, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    stream = io.StringIO()
    handler_for(EventHandler("json", stream))
    emit("prediction", "prediction seq=1", seq=1, classes=[967], labels=["espresso"])
    assert stream.getvalue().startswith('{"event": "prediction"')


def test_encode_field_text_and_binary():
    assert encode_field("A", "b") == b"A=b\n"
    assert encode_field("A", "b\nc") == b"A\n" + struct.pack("<Q", 3) + b"b\nc\n"
