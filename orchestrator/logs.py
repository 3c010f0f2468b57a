"""tbctl's own log, through `logging`: each machine's lifecycle into machine.log in its artifacts
(logger tbctl.machine.NAME), and all of it into a run's log where the engine keeps one (the
`tbctl` logger's handler)."""

from __future__ import annotations

import logging
from pathlib import Path

ROOT = "tbctl"


def machine(name: str, path: Path) -> logging.Logger:
    """The logger of machine `name`, writing to `path` (a machine's artifacts may move before it
    starts: the file follows)."""
    log = logging.getLogger(f"{ROOT}.machine.{name}")
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler) and h.baseFilename != str(path.absolute()):
            log.removeHandler(h)
            h.close()
    if not log.handlers:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {name}: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    return log


def close_machine(name: str) -> None:
    """Close machine `name`'s log file (its later lines, if any, open it again)."""
    log = logging.getLogger(f"{ROOT}.machine.{name}")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def to_file(path: Path) -> logging.Handler:
    """Everything tbctl logs from now on, also into `path` (a run's log); remove it with `stop`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger(ROOT)
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


def stop(handler: logging.Handler) -> None:
    logging.getLogger(ROOT).removeHandler(handler)
    handler.close()
