"""argparse's pieces every command uses: the parser class and the value types, each checked when
the arguments are read. The standard library only: a command's start costs no other command's
imports (`tbctl ssh` is a round trip, not paramiko, pytest and jinja2 loading)."""

from __future__ import annotations

import argparse
import math
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from orchestrator.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake told in one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def output_file(text: str, parents: bool = False) -> str:
    """An argparse type for a file a command writes: checked when the arguments are read, so a
    run never ends, after all its tests, unable to write what it was asked for. Its directory
    must exist, unless the command makes it (`parents`: then the nearest one above that exists)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory; name the file to write")
    parent = _nearest(path.parent) if parents else path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no directory {parent} to write it in")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text}: cannot be written here (permission denied or read-only)")
    return text


def writable_dir(path: Path, what: str) -> Path:
    """A directory a command will make files in, checked (not made) before anything boots: it, or
    the nearest directory above it that exists, can be written."""
    there = _nearest(path)
    if not there.is_dir():
        raise ConfigError(f"{what} {path}: cannot be made: {there} is not a directory")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot be written (permission denied or read-only)")
    return path


def _nearest(path: Path) -> Path:
    """`path`, or the nearest directory above it that exists (what a maker of `path` writes in)."""
    return next(p for p in (path, *path.parents) if p.exists())


def ranged(kind: type[int] | type[float], low: float, high: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` in [low, high] (or (low, high] when `above`)."""
    def num(v: float) -> str:
        return str(int(v)) if kind is int else f"{v:g}"
    shown = f"{'above' if above else 'at least'} {num(low)} and at most {num(high)}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"{text}: must be {shown}")
        return value
    return parse


def mirror_url(text: str) -> str:
    """An argparse type: a Debian mirror is an http(s) URL (or file: for a local copy)."""
    u = urllib.parse.urlsplit(text)
    if u.scheme not in ("http", "https", "file") or (u.scheme != "file" and not u.hostname):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mirror URL: http://HOST/PATH, https://... or file:///PATH")
    return text


SECONDS = ranged(float, 0, 7 * 24 * 3600, above=True)  # a deadline: some time, not forever
