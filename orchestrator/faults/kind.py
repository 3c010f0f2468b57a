"""One kind of fault as the fault table lists it: its name, what it does, its parameters, and how
it fires on a machine (after its seeded delay, recorded on a schedule). `tbctl inject`, the
marker faults of a run (`--fault`) and `tbctl list --faults` are all built from these rows, so
the parameters are spelled once, in the argparse parser each kind makes of them."""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.config.topology import Controller, Namespace
from orchestrator.errors import ConfigError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.timing import Timed


@dataclass(frozen=True)
class Param:
    name: str
    help: str
    choices: tuple[str, ...] = ()
    default: str | None = None  # with one: an option, --NAME VALUE; without: a positional argument
    required: bool = False  # an option, --NAME VALUE, that must be given
    check: Callable[[str], str] | None = None  # the value checked and spelled one way (argparse's type=)


CTRL = Param("ctrl", "the controller's id in the topology (e.g. nvme0)")  # the NVMe faults' first parameter


def namespace_id(text: str) -> str:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a namespace id, 1 or more")
    return str(int(text))


NS = Param("ns", "the namespace id", default="1", check=namespace_id)


def namespace(m: Injectable, a: Mapping[str, str]) -> tuple[Controller, int, Namespace]:
    """The controller and namespace a fault's `ctrl` and `ns` name, both of the machine's topology."""
    ctrl = m.topology.controller(a["ctrl"])
    nsid = int(a["ns"])
    if nsid > len(ctrl.namespaces):
        raise ConfigError(f"{ctrl.id}: no namespace {nsid} (it has {len(ctrl.namespaces)})")
    return ctrl, nsid, ctrl.namespaces[nsid - 1]


@dataclass(frozen=True)
class Timing:
    """When and how long: the seeded delay's source and bound, and the fault's own deadline."""

    rng: random.Random | None = None
    jitter: float = 0.0
    timeout: float = 10.0

    def timed(self) -> Timed:
        return Timed(self.rng, self.jitter)


# Fire the fault on a machine with its arguments: what happened (one line or a few), and the
# schedule it was fired on (what fired, after which delay, when).
Fire = Callable[[Injectable, Mapping[str, str], Timing], tuple[str, Timed]]


@dataclass(frozen=True)
class Kind:
    name: str
    help: str
    params: tuple[Param, ...]
    fire: Fire
    ssh: bool = True  # it needs the guest's SSH (a paused VM's resume does not)

    def add_params(self, p: argparse.ArgumentParser) -> None:
        for a in self.params:
            kw: dict[str, object] = {"help": a.help}
            if a.choices:
                kw["choices"] = a.choices
            if a.check:
                kw["type"] = a.check
            if a.required:
                p.add_argument(f"--{a.name}", required=True, **kw)  # type: ignore[arg-type]
            elif a.default is None:
                p.add_argument(a.name, **kw)  # type: ignore[arg-type]
            else:
                p.add_argument(f"--{a.name}", default=a.default, **kw)  # type: ignore[arg-type]

    def args(self, ns: argparse.Namespace) -> dict[str, str]:
        return {a.name: getattr(ns, a.name) for a in self.params}

    def parse(self, words: list[str], where: str) -> dict[str, str]:
        """The kind's arguments from `words` (as on `tbctl inject`'s command line); a mistake is
        one ConfigError naming `where`."""
        p = _Parser(prog=f"{where}: {self.name}", add_help=False, exit_on_error=False)
        self.add_params(p)
        try:
            return self.args(p.parse_args(words))
        except argparse.ArgumentError as e:
            raise ConfigError(f"{where}: {self.name}: {e}; usage: {self.usage()}") from None

    def usage(self) -> str:
        def one(a: Param) -> str:
            value = "|".join(a.choices) or a.name.upper()
            return f"--{a.name} {value}" if a.required else f"[--{a.name} {value}]" if a.default is not None else value
        return " ".join([self.name, *map(one, self.params)])


class _Parser(argparse.ArgumentParser):
    """argparse that raises on a mistake, also on one it would otherwise exit on."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise argparse.ArgumentError(None, message)
