"""Error kinds tbctl tells apart: bad input, broken infrastructure, and deadlines that fired; and
the outcomes a test ends with, by severity (a run's worst is its verdict). An error prints as one
line without a traceback; where a caller may act on its parts (what hung, a command's status and
output, QEMU's exit code) they are fields, as qemu.machine's VMLaunchFailure keeps them."""

from __future__ import annotations

OUTCOMES = ["passed", "skipped", "known failure", "failed", "timed out", "guest crashed", "qemu crashed",
            "infrastructure error"]


class TbctlError(Exception):
    """Base of every error tbctl reports as one line, without a traceback. `machine` and `stage`
    say which machine, at which step of getting ready, when the error came from one (set by the
    machine that saw it, whatever raised it)."""

    machine: str | None = None
    stage: str | None = None

    def fields(self) -> dict[str, object]:
        """What happened, as data for results.json: the error's kind and every field it has."""
        kept = {k: v for k, v in vars(self).items() if v not in (None, "", [], {}) and not k.startswith("_")}
        return {"kind": type(self).__name__, **{k: v if isinstance(v, (int, float, bool)) else str(v)[-2000:]
                                                 for k, v in kept.items()}}


class ConfigError(TbctlError):
    """Bad input (topology, recipe, arguments): caught before anything boots."""


class ImageError(TbctlError):
    """The guest image could not be built or is unusable."""


class MachineError(TbctlError):
    """QEMU failed to start, died, or the guest never became ready."""


class HostCommandFailed(MachineError):
    """A command tbctl ran on the host (apt-get, dpkg-deb, ...) exited non-zero: the command, its
    status and what it printed, for a caller that tells its failures apart."""

    def __init__(self, message: str, *, cmd: list[str], rc: int, output: str = ""):
        super().__init__(message)
        self.cmd, self.rc, self.output = cmd, rc, output


class QMPError(MachineError):
    """QEMU answered a QMP command with an error: the command, its arguments, QMP's error class
    (GenericError, DeviceNotFound, ...) and QEMU's description."""

    def __init__(self, message: str, *, command: str, arguments: dict[str, object] | None = None,
                 error_class: str = "", desc: str = ""):
        super().__init__(message)
        self.command, self.arguments, self.error_class, self.desc = command, arguments or {}, error_class, desc


class QemuLaunchFailure(MachineError):
    """QEMU exited before its sockets answered: its exit code, command line and output."""

    def __init__(self, message: str, *, exitcode: int | None = None, command: list[str] | None = None,
                 output: str = ""):
        super().__init__(message)
        self.exitcode, self.command, self.output = exitcode, command or [], output


class QemuCrashed(MachineError):
    """QEMU died on its own (a signal, an abort, an unexpected exit) while tbctl was talking to it,
    whichever channel noticed first: the title of its death, and its exit status."""

    def __init__(self, message: str, *, title: str, returncode: int | None):
        super().__init__(message)
        self.title, self.returncode = title, returncode


class DeadlineError(TbctlError):
    """A deadline fired: `what` did not finish within `seconds`; the message also says what was killed."""

    def __init__(self, message: str, *, what: str | None = None, seconds: float | None = None):
        super().__init__(message)
        self.what, self.seconds = what, seconds


class SSHError(TbctlError):
    """SSH to the guest failed (connect, authentication, host key)."""


class CommandFailed(SSHError):
    """A guest command exited non-zero: the command, its status and its output."""

    def __init__(self, message: str, *, cmd: str = "", rc: int | None = None, stdout: str = "", stderr: str = ""):
        super().__init__(message)
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr


class LoadFailed(TbctlError):
    """A load a test judges (fio, SPDK's perf, an app under test) never got its I/O going, or
    ended without the report the test reads: what happened to it, never a parse error."""

    def __init__(self, message: str, *, label: str = "", rc: int | None = None, seconds: float | None = None,
                 output: str = ""):
        super().__init__(message)
        self.label, self.rc, self.seconds, self.output = label, rc, seconds, output
