"""Machine + NVMe topology (and the machine's NICs on a bed's networks): one TOML file, validated
before anything boots.

Every error names the file, the field and what is allowed, on one line. The same model feeds the
QEMU command line and hotplug (`device_add` takes the very dict `-device` was rendered from).
"""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.paths import recipe_names

ACCELS = ("auto", "kvm", "tcg")
BLOCK_SIZES = (512, 4096)
MAX_CONTROLLERS = 16
_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SERIAL = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")


@dataclass(frozen=True)
class Namespace:
    size_mib: int = 256
    block_size: int = 512
    zoned: bool = False
    metadata_size: int = 0  # bytes of metadata per block (QEMU's `ms`), kept apart from the data
    protection: int = 0  # end-to-end protection information type 1-3 (QEMU's `pi`; needs 8 bytes of metadata)

    @property
    def plain(self) -> bool:
        """Data blocks only: what a controller's own drive (and a hot-added one) can carry."""
        return not (self.zoned or self.metadata_size)


@dataclass(frozen=True)
class Controller:
    id: str
    serial: str
    hotplug: bool = True
    namespaces: tuple[Namespace, ...] = (Namespace(),)
    max_ioqpairs: int | None = None
    msix_qsize: int | None = None
    mdts: int | None = None
    cmb_size_mib: int = 0
    pmr_size_mib: int = 0
    subsystem: str | None = None
    shadow_doorbells: bool | None = None  # QEMU's `dbcs` (10.0+); None: QEMU's default
    ioeventfd: bool | None = None  # doorbell writes through eventfds, as spdk-ci's VMs have; None: QEMU's default

    @property
    def root_port(self) -> str:
        return f"rp-{self.id}"

    def node(self, nsid: int) -> str:
        """Block node name of namespace `nsid` (1-based)."""
        return f"{self.id}-ns{nsid}"

    def device(self) -> dict[str, Any]:
        """The `-device` / `device_add` arguments of the controller itself."""
        dev: dict[str, Any] = {"driver": "nvme", "id": self.id, "serial": self.serial}
        if self.hotplug:
            dev["bus"] = self.root_port
        if self.subsystem:
            dev["subsys"] = self.subsystem
        elif len(self.namespaces) == 1 and self.namespaces[0].plain:
            ns = self.namespaces[0]
            dev.update(drive=self.node(1), logical_block_size=ns.block_size, physical_block_size=ns.block_size)
        for key in ("max_ioqpairs", "msix_qsize", "mdts"):
            if getattr(self, key) is not None:
                dev[key] = getattr(self, key)
        if self.cmb_size_mib:
            dev["cmb_size_mb"] = self.cmb_size_mib
        if self.pmr_size_mib:
            dev["pmrdev"] = f"{self.id}-pmr"
        if self.shadow_doorbells is not None:
            dev["dbcs"] = self.shadow_doorbells
        if self.ioeventfd is not None:
            dev["ioeventfd"] = self.ioeventfd
        return dev

    def namespace_devices(self) -> list[dict[str, Any]]:
        """`nvme-ns` devices, needed for several namespaces, ZNS or a subsystem (never hot-added)."""
        if "drive" in self.device():
            return []
        devs = []
        for nsid, ns in enumerate(self.namespaces, 1):
            dev: dict[str, Any] = {"driver": "nvme-ns", "id": f"{self.id}-ns{nsid}", "bus": self.id,
                                   "drive": self.node(nsid), "nsid": nsid,
                                   "logical_block_size": ns.block_size, "physical_block_size": ns.block_size}
            if ns.zoned:
                dev["zoned"] = True
            if ns.metadata_size:
                dev["ms"] = ns.metadata_size
            if ns.protection:
                dev["pi"] = ns.protection
            devs.append(dev)
        return devs


@dataclass(frozen=True)
class Nic:
    """A virtio-net NIC on one of a bed's networks, with a static IPv4 address in the guest. A
    hot-pluggable one has its own pcie-root-port, so it can be pulled (`device_del`) and put back."""

    id: str
    network: str
    address: str  # "10.0.0.1/24"
    hotplug: bool = True

    @property
    def root_port(self) -> str:
        return f"rp-{self.id}"

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]

    def mac(self, machine: str) -> str:
        """Stable per machine and NIC (the guest finds the NIC by it), locally administered."""
        h = hashlib.sha256(f"{machine}/{self.id}".encode()).digest()
        return "52:54:" + ":".join(f"{b:02x}" for b in h[:4])

    def device(self, machine: str) -> dict[str, Any]:
        """The `-device` / `device_add` arguments of the NIC."""
        dev: dict[str, Any] = {"driver": "virtio-net-pci", "netdev": self.id, "id": self.id, "mac": self.mac(machine)}
        if self.hotplug:
            dev["bus"] = self.root_port
        return dev


@dataclass(frozen=True)
class Topology:
    name: str = "default"
    image: str | None = None  # a recipe name; None: the default image (the SPDK-ready one with a tree)
    memory_mib: int = 1024
    cpus: int = 2
    accel: str = "auto"
    iommu: bool = False
    hugepages: int = 0
    qtest: bool = True
    qemu: str | None = None  # the QEMU binary (path or name); None: TBCTL_QEMU or PATH's
    multipath: bool = False  # the guest's native NVMe multipath (QEMU 10.0 gives each nvme a subsystem)
    controllers: tuple[Controller, ...] = field(default_factory=tuple)
    nics: tuple[Nic, ...] = field(default_factory=tuple)  # on a bed's networks (config.bed)
    source: str = "<built-in default>"

    def controller(self, ctrl_id: str) -> Controller:
        for c in self.controllers:
            if c.id == ctrl_id:
                return c
        raise ConfigError(f"no NVMe controller {ctrl_id!r} in topology {self.source}; "
                          f"controllers: {', '.join(c.id for c in self.controllers) or 'none'}")

    @property
    def subsystems(self) -> list[str]:
        return sorted({c.subsystem for c in self.controllers if c.subsystem})

    def kernel_args(self) -> str:
        """What this topology adds to the image's kernel command line. Native multipath is off
        unless asked for: QEMU 10.0 puts every controller in a subsystem (CMIC 0 -> 2), and the
        guest would otherwise show 10.0 and 7.2 differently (hidden path devices nvmeXcYnZ,
        kernel messages naming the path, ~30 % slower removal)."""
        args = [] if self.multipath else ["nvme_core.multipath=N"]
        if self.iommu:
            args.append("intel_iommu=on")
        if self.hugepages:
            args.append(f"hugepages={self.hugepages}")
        return " ".join(args)


# NVMe properties tbctl may set, by the topology field that sets them; and where a QEMU lacks one,
# the first QEMU release known to have it (seen: Debian's 7.2 has no `dbcs`, its 10.0 has).
_PROPERTY_FIELDS = {"cmb_size_mb": "cmb_size_mib", "pmrdev": "pmr_size_mib", "subsys": "subsystem",
                    "dbcs": "shadow_doorbells", "drive": "namespace", "logical_block_size": "namespace.block_size",
                    "physical_block_size": "namespace.block_size"}
_SINCE = {"dbcs": "10.0"}


def check_qemu(topo: Topology, qemu: Any) -> None:
    """Refuse, before a boot, a topology that asks the chosen QEMU (`qemu_binary.Qemu`) for an
    NVMe property or a netdev it does not have: one line naming the field and the version that has it."""
    if topo.nics and "dgram" not in qemu.netdevs:
        raise ConfigError(f"{topo.source}: nic: QEMU {qemu.version_text} ({qemu.path}) has no dgram netdev, which "
                          "carries a bed's networks on loopback; QEMU 7.2 has it")
    for i, c in enumerate(topo.controllers):
        for prop in c.device():
            if prop in ("driver", "id", "bus", "serial") or prop in qemu.nvme_properties:
                continue
            since = f"; QEMU {_SINCE[prop]} has it" if prop in _SINCE else ""
            raise ConfigError(f"{topo.source}: nvme[{i}].{_PROPERTY_FIELDS.get(prop, prop)}: QEMU {qemu.version_text} "
                              f"({qemu.path}) has no nvme property {prop!r}{since}")


def default() -> Topology:
    """Two hot-pluggable controllers with one 256 MiB namespace each, and a qtest socket for
    host-side fault injection (private to the run directory, like QMP)."""
    return Topology(controllers=(Controller("nvme0", "TBCTL0001"), Controller("nvme1", "TBCTL0002")))


class Fields:
    """Reads one TOML table, turning every mistake into a one-line ConfigError."""

    def __init__(self, source: str, where: str, data: Any, allowed: tuple[str, ...]):
        self.source, self.where = source, where
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {where or 'top level'}: must be a table")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(f"{source}: {self._name(unknown[0])}: unknown field; allowed: {', '.join(allowed)}")
        self.data = data

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def sub(self, key: str) -> str:
        """The dotted name of a field or element below this table (for an element's own errors)."""
        return self._name(key)

    def fail(self, key: str, allowed: str, got: Any = None) -> ConfigError:
        got_s = "" if got is None else f" (got {got!r})"
        return ConfigError(f"{self.source}: {self._name(key)}: must be {allowed}{got_s}")

    def int(self, key: str, default: int | None, lo: int, hi: int) -> int | None:
        v = self.data.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(key, f"an integer from {lo} to {hi}", v)
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, "true or false", v)
        return v

    def str(self, key: str, default: str | None, pattern: re.Pattern[str] | None = None,
            choices: tuple[str, ...] = (), what: str = "") -> str | None:
        v = self.data.get(key, default)
        if v is None:
            return None
        if choices and v not in choices:
            raise self.fail(key, f"one of {', '.join(choices)}", v)
        if not isinstance(v, str) or (pattern and not pattern.match(v)):
            raise self.fail(key, what or "a string", v)
        return v

    def list(self, key: builtins.str) -> list[Any]:
        v = self.data.get(key, [])
        if not isinstance(v, list):
            raise self.fail(key, "an array of tables ([[...]])", v)
        return v


MAX_CPUS = 16  # vCPUs of one machine: more only slow TCG down on a host of a few cores
_MACHINE_FIELDS = ("name", "image", "memory_mib", "cpus", "accel", "iommu", "hugepages", "qtest", "qemu",
                   "multipath")
_NIC_FIELDS = ("id", "network", "address", "hotplug")
_CTRL_FIELDS = ("id", "serial", "hotplug", "namespace", "max_ioqpairs", "msix_qsize", "mdts",
                "cmb_size_mib", "pmr_size_mib", "subsystem", "shadow_doorbells", "ioeventfd")
_NS_FIELDS = ("size_mib", "block_size", "zoned", "metadata_size", "protection")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables; unreadable, non-UTF-8 or malformed is one line naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8): a {what} is TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


BUILTIN_DIR = Path(__file__).parent / "topologies"


def ref(arg: str) -> str:
    """--topology's value as a file: the file it names, else the built-in topology of that name
    (shipped as a file, so a run's spec and repro's bundle carry it like any other)."""
    builtin = BUILTIN_DIR / f"{arg}.toml"
    return str(builtin) if not Path(arg).exists() and "/" not in arg and builtin.is_file() else arg


def builtin_names() -> list[str]:
    """The built-in topologies' names, for a message that names what --topology could have been."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load(path: str | Path) -> Topology:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: cannot read topology: no such file (built in: {', '.join(builtin_names())})")
    return parse(read_toml(path, "topology"), str(path))


def parse(data: dict[str, Any], source: str, where: str = "") -> Topology:
    """One machine's topology: its `machine` table, `nvme` and `nic` lists (under `where` in a bed)."""
    top = Fields(source, where, data, ("machine", "nvme", "nic"))
    m = Fields(source, f"{where}.machine" if where else "machine", data.get("machine", {}), _MACHINE_FIELDS)
    memory = m.int("memory_mib", 1024, 256, 65536)
    hugepages = m.int("hugepages", 0, 0, 65536)
    assert memory is not None and hugepages is not None
    if hugepages * 2 > memory // 2:
        raise m.fail("hugepages", f"at most {memory // 4} (2 MiB pages, half of memory_mib={memory})", hugepages)
    controllers = tuple(_controller(source, top.sub(f"nvme[{i}]"), c) for i, c in enumerate(top.list("nvme")))
    nics = tuple(_nic(source, top.sub(f"nic[{i}]"), n) for i, n in enumerate(top.list("nic")))
    if len(controllers) > MAX_CONTROLLERS:
        raise top.fail("nvme", f"at most {MAX_CONTROLLERS} controllers", len(controllers))
    for attr in ("id", "serial"):
        seen: set[str] = set()
        for i, c in enumerate(controllers):
            if getattr(c, attr) in seen and not (attr == "serial" and c.subsystem):
                raise ConfigError(f"{source}: {top.sub(f'nvme[{i}]')}.{attr}: must be unique "
                                  f"(duplicate {getattr(c, attr)!r})")
            seen.add(getattr(c, attr))
    ids = [c.id for c in controllers]
    for i, n in enumerate(nics):
        if n.id in ids:
            raise ConfigError(f"{source}: {top.sub(f'nic[{i}]')}.id: must be unique among NICs and NVMe controllers "
                              f"(duplicate {n.id!r})")
        ids.append(n.id)
    return Topology(
        name=m.str("name", Path(source).stem if source.endswith(".toml") else "default", _ID,
                   what="lower-case letters, digits and _ (max 32), starting with a letter") or "default",
        image=m.str("image", None, choices=tuple(recipe_names())),
        memory_mib=memory,
        cpus=m.int("cpus", 2, 1, MAX_CPUS) or 2,
        accel=m.str("accel", "auto", choices=ACCELS) or "auto",
        iommu=m.bool("iommu", False),
        hugepages=hugepages,
        qtest=m.bool("qtest", True),
        qemu=m.str("qemu", None, re.compile(r"^\S+$"), what="a QEMU binary: a path or a name on PATH"),
        multipath=m.bool("multipath", False),
        controllers=controllers,
        nics=nics,
        source=source,
    )


def _nic(source: str, where: str, data: Any) -> Nic:
    f = Fields(source, where, data, _NIC_FIELDS)
    network = f.str("network", None, _ID, what="a network's name (lower-case letters, digits and _)")
    if network is None:
        raise f.fail("network", "set (the name of a network of the bed)")
    address = f.str("address", None, what="an IPv4 address with its prefix, e.g. \"10.0.0.1/24\"")
    try:
        iface = ipaddress.IPv4Interface(address or "")
    except ValueError:
        raise f.fail("address", "an IPv4 address with its prefix, e.g. \"10.0.0.1/24\"", address) from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) or iface.network.prefixlen > 30:
        raise f.fail("address", "a host address in a network of /30 or larger", address)
    return Nic(id=f.str("id", f"nic_{network}", _ID, what="lower-case letters, digits and _ (max 32)") or "",
               network=network, address=str(iface), hotplug=f.bool("hotplug", True))


def _controller(source: str, where: str, data: Any) -> Controller:
    i = int(where.rsplit("[", 1)[1].rstrip("]"))
    f = Fields(source, where, data, _CTRL_FIELDS)
    ctrl_id = f.str("id", None, _ID, what="lower-case letters, digits and _ (max 32), starting with a letter")
    if ctrl_id is None:
        raise f.fail("id", "set (e.g. id = \"nvme0\")")
    serial = f.str("serial", f"TBCTL{i:04d}", _SERIAL, what="1-20 characters of A-Z a-z 0-9 _ . -")
    hotplug = f.bool("hotplug", True)
    ns_data = f.list("namespace") or [{}]
    if len(ns_data) > 8:
        raise f.fail("namespace", "at most 8 namespaces", len(ns_data))
    namespaces = tuple(_namespace(source, f"{where}.namespace[{j}]", n) for j, n in enumerate(ns_data))
    subsystem = f.str("subsystem", None, _ID, what="an id like 'subsys0'")
    if hotplug and (len(namespaces) > 1 or subsystem or not namespaces[0].plain):
        raise f.fail("hotplug", "false for a controller with several namespaces, ZNS, metadata or a subsystem "
                     "(QEMU cannot hot-add nvme-ns or nvme-subsys)", hotplug)
    return Controller(
        id=ctrl_id, serial=serial or "", hotplug=hotplug, namespaces=namespaces,
        max_ioqpairs=f.int("max_ioqpairs", None, 1, 256), msix_qsize=f.int("msix_qsize", None, 1, 2048),
        mdts=f.int("mdts", None, 0, 255), cmb_size_mib=f.int("cmb_size_mib", 0, 0, 1024) or 0,
        pmr_size_mib=f.int("pmr_size_mib", 0, 0, 1024) or 0, subsystem=subsystem,
        shadow_doorbells=f.bool("shadow_doorbells", False) if "shadow_doorbells" in f.data else None,
        ioeventfd=f.bool("ioeventfd", False) if "ioeventfd" in f.data else None,
    )


def _namespace(source: str, where: str, data: Any) -> Namespace:
    f = Fields(source, where, data, _NS_FIELDS)
    block = f.int("block_size", 512, 512, 4096)
    if block not in BLOCK_SIZES:
        raise f.fail("block_size", f"one of {', '.join(map(str, BLOCK_SIZES))}", block)
    metadata = f.int("metadata_size", 0, 0, 128) or 0
    if metadata % 8:
        raise f.fail("metadata_size", "a multiple of 8 bytes from 0 to 128", metadata)
    protection = f.int("protection", 0, 0, 3) or 0
    if protection and metadata < 8:
        raise f.fail("protection", "0 unless metadata_size is at least 8 (its 8 bytes of protection information)",
                     protection)
    return Namespace(size_mib=f.int("size_mib", 256, 1, 1 << 20) or 256, block_size=block or 512,
                     zoned=f.bool("zoned", False), metadata_size=metadata, protection=protection)
