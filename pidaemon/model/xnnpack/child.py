"""The `xnnpack` engine in a child process, so that the model never holds this process's GIL.

ExecuTorch's Python bindings keep the GIL for the whole of a method's execution: in-process, a
Python capture thread waits for every frame's model run (measured: a 10 ms ticker thread was
late by 11 ms at the median and over a second at p95 while the model ran back to back). Here the
child runs the program and this process only copies the input into shared memory and waits on a
pipe, which releases the GIL. The child exits when the pipe closes, so it never outlives us; it
ignores SIGTERM and SIGHUP (systemd signals the whole unit) because we decide when it stops.
A child that died stays dead: every later call fails at once, so the inference thread's run of
failures ends the daemon and systemd restarts it with a new child.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pidaemon.errors import ModelError, first_line
from pidaemon.model.base import Classifier
from pidaemon.model.xnnpack import ENGINE
from pidaemon.model.xnnpack.runtime import WARMUP_RUNS, top_k_of

if TYPE_CHECKING:
    import torch

INPUT_SHAPE = (1, 3, 224, 224)
INPUT_FLOATS = 3 * 224 * 224
MAX_OUTPUTS = 1 << 16
SHARED_BYTES = 4 * (INPUT_FLOATS + MAX_OUTPUTS)
CLOSE_TIMEOUT_S = 5.0


def _views(buffer: mmap.mmap) -> tuple[torch.Tensor, torch.Tensor]:
    """The input batch and the output area as tensors over the shared memory."""
    import torch

    batch = torch.frombuffer(buffer, dtype=torch.float32, count=INPUT_FLOATS)
    outputs = torch.frombuffer(buffer, dtype=torch.float32, count=MAX_OUTPUTS,
                               offset=4 * INPUT_FLOATS)
    return batch.view(INPUT_SHAPE), outputs


def _child_environment() -> dict[str, str]:
    """Our environment, with this copy of pidaemon first on the child's import path."""
    import pidaemon

    root = str(Path(pidaemon.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


class ChildRefused(ModelError):
    """The child answered with an error (a program it cannot load, a failed call); a child
    that died raises plain ModelError."""


def exit_reason(code: int) -> str:
    """Why the child ended, and what to do about it."""
    if code == -signal.SIGILL:
        return ("the ExecuTorch process died of SIGILL (status -4): this ExecuTorch build uses "
                "instructions this CPU lacks; choose another inference.engine")
    return f"the ExecuTorch process exited (status {code}); see its error above"


class SubprocessXnnpackClassifier(Classifier):
    """An ExecuTorch program run by a child process."""

    engine = ENGINE

    def __init__(self, program: Path, labels: list[str], description: str,
                 threads: int = 1) -> None:
        self.program = program
        self.labels = labels
        self.description = f"{description}, run in a child process"
        self.threads = threads
        self._lock = threading.Lock()
        self._dead: str | None = None  # why the child is gone, once it is
        memory_fd = os.memfd_create("pi-infer-xnnpack")
        os.ftruncate(memory_fd, SHARED_BYTES)
        self._shared = mmap.mmap(memory_fd, SHARED_BYTES)
        self._batch, self._outputs = _views(self._shared)
        command_read, command_write = os.pipe()
        reply_read, reply_write = os.pipe()
        self._child = subprocess.Popen(
            [sys.executable, "-m", "pidaemon.model.xnnpack.child", str(program), str(threads),
             str(memory_fd), str(command_read), str(reply_write)],
            pass_fds=(memory_fd, command_read, reply_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # our stdout may be the JSON event stream
            env=_child_environment())
        for fd in (memory_fd, command_read, reply_write):
            os.close(fd)
        self._commands: BinaryIO = os.fdopen(command_write, "wb", buffering=0)
        self._replies: BinaryIO = os.fdopen(reply_read, "rb")
        try:
            self.outputs = int(self._reply())
        except BaseException:
            self.close()
            raise

    def _ask(self, command: bytes) -> str:
        """Send one command and return the child's answer; raises if it failed or died."""
        if self._dead is not None:
            raise ModelError(self._dead)
        try:
            self._commands.write(command)
        except BrokenPipeError:
            pass  # the child is gone: the reply below is empty and says so
        return self._reply()

    def _reply(self) -> str:
        """The child's answer to the last command; raises if it failed or died."""
        line = self._replies.readline().decode()
        if not line:
            self._dead = f"{self.program}: {exit_reason(self._child.wait(CLOSE_TIMEOUT_S))}"
            raise ModelError(self._dead)
        status, _, detail = line.rstrip("\n").partition(" ")
        if status != "ok":
            raise ChildRefused(detail)
        return detail

    def set_threads(self, threads: int) -> None:
        """Size the child's XNNPACK pool (it reloads the program)."""
        if threads != self.threads:
            with self._lock:
                self._ask(f"threads {threads}\n".encode())
                self.threads = threads

    def module(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a 1x3x224x224 float batch; waits without holding the GIL."""
        with self._lock:
            self._batch.copy_(batch.reshape(INPUT_SHAPE))
            self._ask(b"run\n")
            return self._outputs[:self.outputs].clone().unsqueeze(0)

    def top_k_batch(self, batch: torch.Tensor, k: int) -> list[tuple[list[int], list[float]]]:
        """The `k` best classes of each image, one call each (the program takes one image)."""
        return [top_k_of(self.module(image), k) for image in batch]

    def warm_up(self) -> int:
        """Run the program a few times (XNNPACK packs weights on first call); returns outputs."""
        import torch

        dummy = torch.zeros(INPUT_SHAPE)
        for _ in range(WARMUP_RUNS):
            self.module(dummy)
        return self.outputs

    def close(self) -> None:
        """End the child once the frame it runs is done: closing its command pipe makes it exit.
        A child that does not answer within CLOSE_TIMEOUT_S is killed."""
        locked = self._lock.acquire(timeout=CLOSE_TIMEOUT_S)
        self._dead = self._dead or f"{self.program}: the ExecuTorch process was closed"
        try:
            self._commands.close()
        except BrokenPipeError:
            pass
        try:
            self._child.wait(timeout=CLOSE_TIMEOUT_S if locked else 0)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        if locked:
            self._lock.release()
            self._replies.close()  # else a hung call still reads it; it sees the end of file


def serve(program: str, threads: int, memory_fd: int, command_fd: int, reply_fd: int) -> None:
    """The child: load the program, then run it on each `run` command until the pipe closes."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the parent decides when we stop
    replies = os.fdopen(reply_fd, "wb", buffering=0)
    try:
        from pidaemon.model.xnnpack.runtime import XnnpackClassifier

        classifier = XnnpackClassifier(Path(program), [], program, threads)
        batch, outputs = _views(mmap.mmap(memory_fd, SHARED_BYTES))
        count = classifier.module(batch).numel()
    except Exception as exc:  # noqa: BLE001 - reported to the parent as its ModelError
        replies.write(f"error {first_line(exc)}\n".encode())
        return
    if count > MAX_OUTPUTS:
        replies.write(f"error {program}: {count} outputs, more than {MAX_OUTPUTS}\n".encode())
        return
    replies.write(f"ok {count}\n".encode())
    with os.fdopen(command_fd, "rb") as commands:
        for line in commands:
            command, _, argument = line.decode().strip().partition(" ")
            try:
                if command == "run":
                    outputs[:count].copy_(classifier.module(batch).reshape(-1))
                elif command == "threads":
                    classifier.set_threads(int(argument))
                replies.write(b"ok\n")
            except Exception as exc:  # noqa: BLE001 - one failed frame, reported per call
                replies.write(f"error {first_line(exc)}\n".encode())


if __name__ == "__main__":
    # ExecuTorch's bindings write their log (CPU probing, every thread pool reset) to Python's
    # sys.stderr, which is the journal: drop it, and keep our own failures on the real stderr.
    sys.stderr = open(os.devnull, "w")  # for the life of the process
    try:
        serve(sys.argv[1], int(sys.argv[2]), *(int(arg) for arg in sys.argv[3:6]))
    except Exception:  # noqa: BLE001 - any failure of ours, with its traceback
        traceback.print_exc(file=sys.__stderr__)
        raise SystemExit(1) from None
