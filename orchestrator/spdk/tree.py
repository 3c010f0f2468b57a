"""Will this SPDK tree start in that guest? Read from the tree's ELF files and the image's root.

Before anything boots, every app the suites run is read with pyelftools: the shared libraries
it needs (DT_NEEDED, resolved as the guest's loader will: the tree's own library directories on
LD_LIBRARY_PATH, then the image's), the symbol versions it needs from each (GLIBC_2.38 ...),
and, from DPDK's generated rte_build_config.h, the CPU features the tree was compiled for and
the DPDK version a shared build was made against. Each mismatch is one `Problem`: the file,
what it needs, what the guest has, and the way out. Nothing here guesses a layout: app paths
are the ones SPDK's own scripts run, and library directories come from the ELF files' RUNPATHs
and the tree's build output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

# The apps tbctl's suites run (and the one the start probe runs), where SPDK's scripts find them.
APPS = (
    "build/examples/hotplug",
    "test/nvme/doorbell_aers/doorbell_aers",
    "build/bin/spdk_nvme_identify",
    "build/bin/nvmf_tgt",
    "build/bin/spdk_nvme_perf",
    "build/examples/bdevperf",
)
# Build output that holds the tree's own shared libraries (--with-shared, DPDK built in-tree).
TREE_LIB_DIRS = ("build/lib", "dpdk/build/lib")
BUILD_CONFIG_DIRS = ("dpdk/build/include", "dpdk/build/include/dpdk", "dpdk/build-tmp")
# The loader's own default directories on Debian x86_64, after /etc/ld.so.conf's.
DEFAULT_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
# DPDK's RTE_CPUFLAG_ names -> QEMU's feature names, where they differ beyond case.
_QEMU_FLAG = {"SSE3": "pni", "SSE4_1": "sse4.1", "SSE4_2": "sse4.2", "PCLMULQDQ": "pclmulqdq", "RDRAND": "rdrand"}


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the tree
    need: str
    have: str
    fix: str

    def line(self) -> str:
        return f"{self.file}: needs {self.need}; {self.have}; {self.fix}"


@dataclass(frozen=True)
class Elf:
    path: Path
    needed: tuple[str, ...]
    runpath: tuple[str, ...]  # RUNPATH, else RPATH, with $ORIGIN expanded
    version_needs: dict[str, frozenset[str]]  # soname -> version names (GLIBC_2.34, ...)
    version_defs: frozenset[str]


@lru_cache(maxsize=4096)
def read_elf(path: Path) -> Elf | None:
    """The dynamic-linking facts of `path`, or None when it is not an ELF file."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            needed: list[str] = []
            runpath: list[str] = []
            rpath: list[str] = []
            needs: dict[str, set[str]] = {}
            defs: set[str] = set()
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        tag = cast(Any, tag)  # pyelftools sets .needed, .runpath, .rpath by the tag's kind
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            runpath += tag.runpath.split(":")
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpath += tag.rpath.split(":")
                elif isinstance(sec, GNUVerNeedSection):
                    for verneed, auxes in sec.iter_versions():
                        needs.setdefault(str(verneed.name), set()).update(a.name for a in auxes)
                elif isinstance(sec, GNUVerDefSection):
                    for _, auxes in sec.iter_versions():
                        defs.update(a.name for a in auxes)
    except (OSError, ELFError):
        return None
    origin = str(path.parent)
    paths = tuple(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in (runpath or rpath) if p)
    return Elf(path, tuple(needed), paths, {k: frozenset(v) for k, v in needs.items()}, frozenset(defs))


class GuestRoot:
    """The guest image's file tree on the host, looked at as the guest's loader would."""

    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        self.lib_dirs = [*self._ld_so_conf("/etc/ld.so.conf", set()), *DEFAULT_LIB_DIRS]

    def resolve(self, guest_path: str, depth: int = 0) -> Path | None:
        """The host path of `guest_path`, symlinks followed inside the image (absolute links
        point into the image, not the host)."""
        parts = [p for p in guest_path.split("/") if p]
        cur = self.root
        for i, part in enumerate(parts):
            nxt = cur / part
            if nxt.is_symlink():
                if depth > 40:
                    return None
                target = os.readlink(nxt)
                base = "" if target.startswith("/") else "/" + str(cur.relative_to(self.root))
                rest = "/".join(parts[i + 1:])
                return self.resolve(f"{base}/{target}/{rest}", depth + 1)
            cur = nxt
        return cur if cur.exists() else None

    def _ld_so_conf(self, conf: str, seen: set[str]) -> list[str]:
        path = self.resolve(conf)
        if path is None or conf in seen or not path.is_file():
            return []
        seen.add(conf)
        dirs = []
        for line in path.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                for inc in sorted(self.root.glob(pattern.lstrip("/"))):
                    dirs += self._ld_so_conf("/" + str(inc.relative_to(self.root)), seen)
            elif line.startswith("/"):
                dirs.append(line)
        return dirs

    def find(self, soname: str) -> Path | None:
        for d in self.lib_dirs:
            if (p := self.resolve(f"{d}/{soname}")) is not None and p.is_file():
                return p
        return None

    def package_of(self, lib: Path) -> str | None:
        """The Debian package whose file list holds `lib` (by name: the list says /usr/lib/..,
        the loader may have found it through /lib)."""
        info = self.root / "var/lib/dpkg/info"
        suffix = f"/{lib.name}\n"
        for lst in sorted(info.glob("*.list")) if info.is_dir() else ():
            if suffix in lst.read_text(errors="replace"):
                return lst.stem.split(":", 1)[0]
        return None

    def newest(self, lib: Path, prefix: str) -> str:
        """The newest version `lib` defines with `prefix` (e.g. GLIBC_ -> "GLIBC_2.36")."""
        elf = read_elf(lib)
        versions = [v for v in (elf.version_defs if elf else ()) if v.startswith(prefix)]
        return max(versions, key=_version_key) if versions else f"no {prefix}* version"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _family(version: str) -> str:
    m = re.match(r"^(.*?_)\d", version)
    return m.group(1) if m else version


@dataclass(frozen=True)
class BuildConfig:
    """What DPDK's meson wrote into rte_build_config.h for this tree."""

    path: Path
    cpu_flags: tuple[str, ...]  # RTE_CPUFLAG_ names without the prefix
    machine: str
    version: str

    @classmethod
    def read(cls, path: Path) -> BuildConfig:
        defs = dict(re.findall(r"^#define\s+(RTE_\w+)\s+(.*?)\s*$", path.read_text(errors="replace"), re.M))
        flags = tuple(f.strip().removeprefix("RTE_CPUFLAG_")
                      for f in defs.get("RTE_COMPILE_TIME_CPUFLAGS", "").split(",") if f.strip())
        version = ".".join(defs.get(k, "?") for k in ("RTE_VER_YEAR", "RTE_VER_MONTH", "RTE_VER_MINOR"))
        return cls(path, flags, defs.get("RTE_MACHINE", "?").strip('"'), version)


@dataclass
class Tree:
    """A built SPDK tree on the host: which of the suites' apps it has, and its build config."""

    root: Path
    apps: list[str] = field(init=False)  # of APPS, the ones built
    config: dict[str, str] = field(init=False)  # mk/config.mk

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.apps = [a for a in APPS if (self.root / a).is_file()]
        self.config = _config_mk(self.root / "mk" / "config.mk")

    @property
    def release(self) -> str:
        """SPDK's version: its VERSION file (v24.05 on), else include/spdk/version.h's macros."""
        v, h = self.root / "VERSION", self.root / "include/spdk/version.h"
        if v.is_file():
            return v.read_text().strip()
        defs = dict(re.findall(r"^#define\s+SPDK_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)", h.read_text(), re.M)) \
            if h.is_file() else {}
        return f"{defs['MAJOR']}.{int(defs['MINOR']):02d}.{defs['PATCH']}" if len(defs) == 3 else "unknown"

    def lib_dirs(self) -> list[Path]:
        """The tree's directories that hold a shared library its apps load (directly or through
        another of its libraries), in the order the guest searches them: each app's RUNPATH
        entries inside the tree, then the build output's. Empty for a static build."""
        candidates: list[Path] = []
        runpaths = [Path(p) for a in self.apps if (e := read_elf(self.root / a)) for p in e.runpath]
        extra = [Path(d) / sub for d in (self.config.get("CONFIG_DPDK_LIB_DIR"), self.config.get("CONFIG_DPDK_DIR"))
                 if d for sub in ("", "lib")]
        for d in [*runpaths, *(self.root / d for d in TREE_LIB_DIRS), *extra]:
            d = d.resolve() if d.exists() else d
            if d.is_dir() and d.is_relative_to(self.root) and d not in candidates:
                candidates.append(d)
        used: set[Path] = set()
        todo, seen = [self.root / a for a in self.apps], set()
        while todo:
            elf = read_elf(todo.pop())
            for soname in elf.needed if elf else ():
                lib_dir = next((d for d in candidates if (d / soname).is_file()), None)
                if lib_dir is not None:
                    used.add(lib_dir)
                    if lib_dir / soname not in seen:
                        seen.add(lib_dir / soname)
                        todo.append(lib_dir / soname)
        return [d for d in candidates if d in used]

    def guest_lib_path(self, mount: str) -> str:
        """LD_LIBRARY_PATH for the tree mounted at `mount` in the guest ("" for a static build)."""
        return ":".join(f"{mount}/{d.relative_to(self.root)}" for d in self.lib_dirs())

    def build_config(self) -> BuildConfig | None:
        dirs = [self.root / d for d in BUILD_CONFIG_DIRS]
        for key in ("CONFIG_DPDK_INC_DIR", "CONFIG_DPDK_DIR"):
            if self.config.get(key):
                base = Path(self.config[key])
                dirs += [base, base / "include", base / "include/dpdk"]
        for d in dirs:
            if (d / "rte_build_config.h").is_file():
                return BuildConfig.read(d / "rte_build_config.h")
        return None


def _config_mk(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return dict(re.findall(r"^(CONFIG_\w+)\s*\?=\s*(.*?)\s*$", path.read_text(errors="replace"), re.M))


def check(tree: Tree, guest: GuestRoot, cpu_features: frozenset[str], cpu_what: str,
          others: list[GuestRoot]) -> list[Problem]:
    """Every reason the tree's apps cannot start in the guest that files alone can tell; the
    way out names one of `others` (images on which the whole tree passes) that has what is
    missing, where one does."""
    if not tree.apps:
        return [Problem(".", f"one of {', '.join(APPS)}", "none is in the tree",
                        "build the tree first (./configure && make) or point --spdk-dir at a built one")]
    problems: list[Problem] = []
    lib_dirs = tree.lib_dirs()
    rebuild = (f"build the tree in the guest's userland: tbctl image shell --image {guest.name} "
               f"--bind {tree.root} -- sh -c './configure ... && make'")
    seen: set[Path] = set()

    def rel(p: Path) -> str:
        return str(p.relative_to(tree.root)) if p.is_relative_to(tree.root) else str(p)

    def elsewhere(soname: str, versions: list[str]) -> str:
        for other in others:
            lib = other.find(soname)
            defs = (e.version_defs if (e := read_elf(lib)) else frozenset()) if lib else frozenset()
            if lib and set(versions) <= defs:
                pkg = other.package_of(lib)
                return f"use --image {other.name}, which has it{f' (package {pkg})' if pkg else ''}"
        return ""

    def visit(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        elf = read_elf(path)
        if elf is None:
            return
        for soname in elf.needed:
            in_tree = next((d / soname for d in lib_dirs if (d / soname).is_file()), None)
            lib = in_tree or guest.find(soname)
            if lib is None:
                where, fix = "", elsewhere(soname, []) or "add the Debian package that ships it to the image's recipe"
                if elf.runpath:
                    outside = any(not Path(p).is_relative_to(tree.root) for p in elf.runpath)
                    where = (f" (nor has its RUNPATH {':'.join(elf.runpath)}"
                             f"{', outside the tree, so not in the guest' if outside else ''})")
                    if not outside:
                        fix = "the tree's build output lacks it: rebuild the tree (make)"
                problems.append(Problem(rel(path), soname, f"the guest image {guest.name} has no {soname}{where}", fix))
                continue
            lib_elf = read_elf(lib)
            have = lib_elf.version_defs if lib_elf else frozenset()
            missing = sorted(elf.version_needs.get(soname, frozenset()) - have, key=_version_key)
            if missing:
                has = f"the guest's {soname} has up to {guest.newest(lib, _family(missing[-1]))}" \
                    if not in_tree else f"the tree's {rel(lib)} lacks them"
                other = elsewhere(soname, missing)
                problems.append(Problem(rel(path), f"{', '.join(missing)} from {soname}", has,
                                        f"it was built against a newer {soname} than the guest's: {rebuild}"
                                        + (f", or {other}" if other else "")))
            if in_tree:
                visit(in_tree)

    for app in tree.apps:
        visit(tree.root / app)
    cfg = tree.build_config()
    if cfg is not None:
        problems += _cpu_problems(tree, cfg, cpu_features, cpu_what)
        problems += _dpdk_problems(tree, cfg, lib_dirs, guest, rebuild)
    return _merged(problems)


def _merged(problems: list[Problem]) -> list[Problem]:
    """One line per distinct need, naming every file that has it."""
    files: dict[tuple[str, str, str], list[str]] = {}
    for p in problems:
        files.setdefault((p.need, p.have, p.fix), [])
        if p.file not in files[(p.need, p.have, p.fix)]:
            files[(p.need, p.have, p.fix)].append(p.file)
    return [Problem(", ".join(f), need, have, fix) for (need, have, fix), f in files.items()]


def _cpu_problems(tree: Tree, cfg: BuildConfig, features: frozenset[str], what: str) -> list[Problem]:
    lacking = [f for f in cfg.cpu_flags if _QEMU_FLAG.get(f, f.lower()) not in features]
    if not lacking:
        return []
    return [Problem(str(cfg.path.relative_to(tree.root)) if cfg.path.is_relative_to(tree.root) else str(cfg.path),
                    f"CPU features {', '.join(lacking)} (compiled for machine {cfg.machine!r})",
                    f"the guest CPU ({what}) has none of them, so DPDK refuses to start "
                    f"(\"This system does not support ...\") or the app dies on an illegal instruction",
                    "reconfigure for a CPU the guest has (./configure --target-arch=x86-64-v2) and rebuild")]


def _dpdk_problems(tree: Tree, cfg: BuildConfig, lib_dirs: list[Path], guest: GuestRoot,
                   rebuild: str) -> list[Problem]:
    """A tree linked against a DPDK outside itself must meet the same DPDK version in the guest."""
    problems = []
    versions: dict[str, str | None] = {}  # the guest's librte_eal soname -> its DPDK version, read once
    for app in tree.apps:
        elf = read_elf(tree.root / app)
        eal = next((n for n in (elf.needed if elf else ()) if n.startswith("librte_eal.so")), None)
        if eal is None or any((d / eal).is_file() for d in lib_dirs):
            continue
        if eal not in versions:
            lib = guest.find(eal)
            versions[eal] = _dpdk_version_of(lib) if lib else None
        if versions[eal] and versions[eal] != cfg.version:
            problems.append(Problem(app, f"DPDK {cfg.version} (built against {cfg.path})",
                                    f"the guest's {eal} is DPDK {versions[eal]}", rebuild))
    return problems


def _dpdk_version_of(lib: Path) -> str | None:
    """DPDK's version from the "DPDK YY.MM.N" string rte_version() returns, inside the library."""
    m = re.search(rb"DPDK (\d+)\.(\d+)\.(\d+)", lib.read_bytes())
    return ".".join(str(int(x)) for x in m.groups()) if m else None
