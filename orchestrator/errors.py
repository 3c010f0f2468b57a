"""Error kinds tbctl tells apart: bad input, broken infrastructure, and deadlines that fired; and
the outcomes a test ends with, by severity (a run's worst is its verdict)."""

OUTCOMES = ["passed", "skipped", "failed", "timed out", "guest crashed", "qemu crashed", "infrastructure error"]


class TbctlError(Exception):
    """Base of every error tbctl reports as one line, without a traceback."""


class ConfigError(TbctlError):
    """Bad input (topology, recipe, arguments): caught before anything boots."""


class ImageError(TbctlError):
    """The guest image could not be built or is unusable."""


class MachineError(TbctlError):
    """QEMU failed to start, died, or the guest never became ready."""


class DeadlineError(TbctlError):
    """A deadline fired; the message says what hung and what was killed."""


class SSHError(TbctlError):
    """SSH to the guest failed (connect, authentication, host key)."""
