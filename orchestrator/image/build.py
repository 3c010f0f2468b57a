"""Guest image recipe -> cached kernel, initrd, qcow2 root disk and SSH keys, keyed by content hash.

A recipe lives in images/<name>/recipe.toml and may name a `base` recipe whose fields it
inherits (`extra_packages` adds to the base's packages), so a variant is a few lines, not a copy.
The hash covers the recipe and its bases, every template under templates/image/ and
BUILDER_VERSION, so editing any of them yields a new image and a second build of the same inputs
is a no-op. Building needs root (mmdebstrap writes a root-owned tree, which `mkfs.ext4 -d` turns
into a disk without loop mounts). The tree is kept beside the disk (`root/`): `tbctl image shell`
runs in it, and `tbctl spdk check` reads what the guest provides from it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import ConfigError, ImageError
from orchestrator.image import apt
from orchestrator.paths import IMAGES, TEMPLATES, cache_dir, recipe_names
from orchestrator.render import render

BUILDER_VERSION = "2"
DEFAULT_IMAGE = "bookworm"
SPDK_IMAGE = "bookworm-spdk"  # the default when a run brings an SPDK tree

# Console markers printed by the guest (templates/image/*); the host waits on them.
MARKER_READY = "TBCTL-READY sshd"
MARKER_UDEV = "TBCTL-READY udev"
MARKER_PROBE = "TBCTL-PROBE-OK"
MARKER_FAILED = "TBCTL-BOOT-FAILED"
MARKER_SHUTDOWN = "TBCTL-SHUTDOWN"
CORE_DIR = "/var/tbctl/cores"  # guest core_pattern: core.PID.SIGNAL.EXE (EXE's "/" as "!")
# The guest's trace of the signals its kernel generates, with the sender's stack (rc.boot arms
# it; orchestrator/report/signals.py reads it): an ftrace instance of its own, so that nothing
# else using ftrace in the guest turns it off.
SIGNAL_TRACE = "/sys/kernel/debug/tracing/instances/tbctl-signals"
# Every standard signal but those sent all the time in normal work: CHLD, ALRM, URG, VTALRM,
# PROF, WINCH, IO (and no real-time ones, which glibc's threads use).
SIGNAL_FILTER = "sig < 32 && sig != 14 && sig != 17 && sig != 23 && sig != 26 && sig != 27 && sig != 28 && sig != 29"

GUEST_LIBDIR = "/usr/local/lib/tbctl"
GUEST_INIT = f"{GUEST_LIBDIR}/init"
HOST_KEY_ALIAS = "tbctl-guest"
# On the kernel command line: eth0's address comes from DHCP (a libvirt network), not the fixed
# address of QEMU's user network.
DHCP_FLAG = "tbctl.net=dhcp"

_RECIPE_FIELDS = {
    "name": str, "suite": str, "hostname": str, "disk_size_mib": int, "packages": list,
    "path_excludes": list, "path_includes": list, "prune_modules": list, "initrd_modules": list,
    "early_modules": list, "cmdline": str,
}
_VARIANT_FIELDS = {"base": str, "extra_packages": list}


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    hostname: str
    disk_size_mib: int
    packages: list[str]
    path_excludes: list[str]
    path_includes: list[str]
    prune_modules: list[str]
    initrd_modules: list[str]
    early_modules: list[str]
    cmdline: str
    path: Path = field(compare=False)

    bases: tuple[Path, ...] = field(default=(), compare=False)

    @classmethod
    def load(cls, name: str) -> Recipe:
        path = IMAGES / name / "recipe.toml"
        data, bases = _recipe_data(name, [])
        for key, typ in _RECIPE_FIELDS.items():
            if not isinstance(data.get(key), typ):
                raise ConfigError(f"{path}: field '{key}' must be a {typ.__name__}")
        return cls(path=path, bases=tuple(bases), **data)

    def digest(self) -> str:
        """Hash of everything the built image depends on in this source tree."""
        h = hashlib.sha256(f"builder={BUILDER_VERSION}\n".encode())
        inputs = [*self.bases, self.path, *sorted((TEMPLATES / "image").glob("*"))]
        for p in inputs:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        return h.hexdigest()[:16]


def _recipe_data(name: str, seen: list[str]) -> tuple[dict[str, Any], list[Path]]:
    """A recipe's fields with its base's filled in, and the base recipe files it read."""
    path = IMAGES / name / "recipe.toml"
    if not path.is_file():
        where = f"{IMAGES / seen[-1] / 'recipe.toml'}: field 'base': " if seen else ""
        raise ConfigError(f"{where}image {name!r}: no {path}; known images: {', '.join(recipe_names())}")
    if name in seen:
        raise ConfigError(f"{path}: field 'base': recipes inherit in a circle ({' -> '.join([*seen, name])})")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    allowed = {**_RECIPE_FIELDS, **_VARIANT_FIELDS}
    unknown = set(data) - set(allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(allowed)}")
    for key, typ in _VARIANT_FIELDS.items():
        if key in data and not isinstance(data[key], typ):
            raise ConfigError(f"{path}: field '{key}' must be a {typ.__name__}")
    if "base" not in data:
        if "extra_packages" in data:
            raise ConfigError(f"{path}: field 'extra_packages' needs a 'base' recipe to add to; use 'packages'")
        return data, []
    base_name = data.pop("base")
    base, bases = _recipe_data(base_name, [*seen, name])
    extra = data.pop("extra_packages", [])
    merged = {**base, **data}
    merged["packages"] = [*merged.get("packages", []), *extra]
    return merged, [*bases, IMAGES / base_name / "recipe.toml"]


@dataclass(frozen=True)
class Image:
    """A built image in the cache; every VM boots it through a throw-away overlay."""

    dir: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads((self.dir / "manifest.json").read_text()))

    kernel = property(lambda self: self.dir / "vmlinux")
    initrd = property(lambda self: self.dir / "initrd.img")
    disk = property(lambda self: self.dir / "root.qcow2")
    root = property(lambda self: self.dir / "root")  # the guest's file tree, as on its disk
    client_key = property(lambda self: self.dir / "id_ed25519")
    host_key_pub = property(lambda self: self.dir / "ssh_host_ed25519_key.pub")

    @property
    def cmdline(self) -> str:
        return str(self.manifest["cmdline"])

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])


def choose(explicit: str | None, topology_image: str | None, spdk: bool) -> str:
    """The recipe a run boots: --image, else the topology's, else the SPDK-ready one for a run
    with an SPDK tree, else the default."""
    return explicit or topology_image or (SPDK_IMAGE if spdk else DEFAULT_IMAGE)


def images_root() -> Path:
    return cache_dir() / "images"


def cached(recipe: Recipe) -> Image | None:
    d = images_root() / f"{recipe.name}-{recipe.digest()}"
    return Image(d) if (d / "manifest.json").is_file() else None


def list_cached() -> list[Image]:
    root = images_root()
    if not root.is_dir():
        return []
    return [Image(d) for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()]


Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure(name: str = DEFAULT_IMAGE, *, mirror: str | None = None, progress: Progress = _stderr) -> Image:
    """The cached image for recipe `name`, built first if the cache has none for its hash."""
    recipe = Recipe.load(name)
    if (img := cached(recipe)) is not None:
        return img
    root = images_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{recipe.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same recipe: wait, then reuse it
        if (img := cached(recipe)) is not None:
            return img
        return _build(recipe, root / f"{recipe.name}-{recipe.digest()}", mirror, progress)


def _run(argv: list[str], log: Path, timeout: float, what: str) -> None:
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ImageError(f"{what} did not finish within {timeout:.0f} s (log: {log})") from None
        except FileNotFoundError:
            raise ImageError(f"{what}: {argv[0]} is not installed") from None
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ImageError(f"{what} failed with exit code {proc.returncode} (log: {log}):\n{tail}")


def _build(recipe: Recipe, dest: Path, mirror: str | None, progress: Progress) -> Image:
    if os.geteuid() != 0:
        raise ImageError("building a guest image needs root (mmdebstrap and mkfs.ext4 -d keep file owners)")
    mirror = mirror or apt.host_mirror(recipe.suite)
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=dest.parent))
    log = work / "build.log"
    rootfs = work / "rootfs"
    started = time.monotonic()
    steps = ["keys", "debootstrap (mmdebstrap)", "customize", "kernel + initrd", "root disk"]

    def step(i: int, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        progress(f"[{i + 1}/{len(steps)}] {steps[i]} ...")
        fn()
        progress(f"[{i + 1}/{len(steps)}] {steps[i]} done in {time.monotonic() - t0:.1f} s")

    try:
        progress(f"building image {recipe.name} ({recipe.digest()}) from {mirror}; log: {log}")
        step(0, lambda: _make_keys(work))
        step(1, lambda: _debootstrap(recipe, rootfs, mirror, work, log))
        step(2, lambda: _customize(recipe, rootfs, work, log))
        kver: list[str] = []
        step(3, lambda: kver.append(_kernel_and_initrd(recipe, rootfs, work, log)))
        step(4, lambda: _root_disk(recipe, rootfs, work, log))
        rootfs.rename(work / "root")
        manifest = {
            "name": recipe.name, "digest": recipe.digest(), "suite": recipe.suite, "kernel": kver[0],
            "cmdline": f"{recipe.cmdline} init={GUEST_INIT}", "mirror": mirror,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - started, 1),
            "packages": _package_versions(work),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(work, dest)
        progress(f"image {recipe.name} ready in {manifest['build_seconds']} s: {dest}")
        return Image(dest)
    except BaseException:
        if rootfs.exists():
            shutil.rmtree(rootfs, ignore_errors=True)
        failed = dest.parent / f".failed-{recipe.name}.log"
        if log.exists():
            shutil.copy(log, failed)
        shutil.rmtree(work, ignore_errors=True)
        raise


def _make_keys(work: Path) -> None:
    """A per-image client key and a pre-generated host key, so the client can pin the host key."""
    # imported here, as zstandard below: every tbctl command reads an image's paths, few build one
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for name in ("id_ed25519", "ssh_host_ed25519_key"):
        key = Ed25519PrivateKey.generate()
        priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        (work / name).write_bytes(priv)
        os.chmod(work / name, 0o600)
        (work / f"{name}.pub").write_bytes(pub + f" tbctl-{name}\n".encode())
    host_pub = (work / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    (work / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {' '.join(host_pub)}\n")


def _debootstrap(recipe: Recipe, rootfs: Path, mirror: str, work: Path, log: Path) -> None:
    conf = work / "initramfs.conf"
    conf.write_text(render("image/initramfs.conf.j2"))
    argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory",
            f"--include={','.join(recipe.packages)}",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\"",
            f"--essential-hook=cp {shlex.quote(str(conf))} \"$1/etc/initramfs-tools/conf.d/tbctl.conf\""]
    argv += [f"--dpkgopt=path-exclude={p}" for p in recipe.path_excludes]
    argv += [f"--dpkgopt=path-include={p}" for p in recipe.path_includes]
    argv += [recipe.suite, str(rootfs), mirror]
    _run(argv, log, timeout=1200, what="mmdebstrap")


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)


def _customize(recipe: Recipe, rootfs: Path, work: Path, log: Path) -> None:
    ctx = dict(hostname=recipe.hostname, libdir=GUEST_LIBDIR, guest_ip="10.0.2.15", gateway_ip="10.0.2.2",
               marker_ready=MARKER_READY, marker_udev=MARKER_UDEV, marker_shutdown=MARKER_SHUTDOWN,
               marker_failed=MARKER_FAILED, early_modules=recipe.early_modules, core_dir=CORE_DIR,
               dhcp_flag=DHCP_FLAG, signal_trace=SIGNAL_TRACE, signal_filter=SIGNAL_FILTER)
    lib = rootfs / GUEST_LIBDIR.lstrip("/")
    _write(lib / "rc.boot", render("image/rc.boot.sh.j2", **ctx), 0o755)
    _write(lib / "udhcpc", render("image/udhcpc.sh.j2"), 0o755)
    _write(lib / "rc.shutdown", render("image/rc.shutdown.sh.j2", **ctx), 0o755)
    _write(rootfs / "etc/inittab", render("image/inittab.j2", **ctx))
    (lib / "init").symlink_to("/bin/busybox")
    for tool in ("poweroff", "reboot", "halt"):
        (rootfs / "usr/local/sbin" / tool).symlink_to("/bin/busybox")
    _write(rootfs / "etc/hostname", recipe.hostname + "\n")
    _write(rootfs / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {recipe.hostname}\n")
    _write(rootfs / "etc/fstab", "")
    _write(rootfs / "etc/ssh/sshd_config.d/tbctl.conf", render("image/sshd.conf.j2"))
    for old in (rootfs / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    _write(rootfs / "etc/ssh/ssh_host_ed25519_key", (work / "ssh_host_ed25519_key").read_bytes(), 0o600)
    _write(rootfs / "etc/ssh/ssh_host_ed25519_key.pub", (work / "ssh_host_ed25519_key.pub").read_bytes())
    (rootfs / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    _write(rootfs / "root/.ssh/authorized_keys", (work / "id_ed25519.pub").read_bytes(), 0o600)
    _run(["chroot", str(rootfs), "usermod", "-p", "*", "root"], log, 60, "lock root password")
    kver = _kernel_version(rootfs)
    moddir = rootfs / "lib/modules" / kver / "kernel"
    for sub in recipe.prune_modules:
        shutil.rmtree(moddir / sub, ignore_errors=True)
    _run(["chroot", str(rootfs), "depmod", kver], log, 120, "depmod")
    versions = subprocess.run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    (work / "packages.txt").write_text(versions)
    for stale in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / stale).glob("*"):
            if p.is_file():
                p.unlink()


def _kernel_version(rootfs: Path) -> str:
    versions = sorted(p.name for p in (rootfs / "lib/modules").iterdir())
    if len(versions) != 1:
        raise ImageError(f"expected one kernel in the image, found {versions}")
    return versions[0]


# bzImage payload formats: magic -> (name, decompressor). Debian's bookworm kernels are XZ,
# trixie's zstd.
_PAYLOADS: dict[bytes, tuple[str, Callable[[bytes], bytes]]] = {
    b"\xfd7zXZ\x00": ("XZ", lambda d: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d)),
    b"\x28\xb5\x2f\xfd": ("zstd", lambda d: _unzstd(d)),
}


def _unzstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage: QEMU boots it through its PVH note,
    which skips SeaBIOS-era real-mode setup and in-guest decompression (~2 s under TCG)."""
    found = [(start, kind) for magic, kind in _PAYLOADS.items() if (start := bzimage.find(magic)) >= 0]
    if not found:
        raise ImageError(f"kernel image has no {' or '.join(n for n, _ in _PAYLOADS.values())} payload")
    start, (name, decompress) = found[0]
    elf = decompress(bzimage[start:])
    if not elf.startswith(b"\x7fELF"):
        raise ImageError(f"{name} payload of the kernel image is not an ELF file")
    return elf


def module_chains(modules_dep: str, builtin: set[str], wanted: list[str]) -> list[list[str]]:
    """Paths (relative to lib/modules/KVER) of `wanted` modules and their dependencies, as chains
    that share no module, each in load order (a module after everything it needs); built-in
    modules are skipped. The initrd loads the chains side by side: under TCG each insmod checks a
    signature and relocates a module, ~0.2 s of a boot saved on two vCPUs."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        by_name[_modname(path)] = path
    order: list[str] = []

    def visit(path: str, into: set[str]) -> None:
        into.add(path)
        if path in order:  # and so is all it needs, in the group that has it
            return
        for dep in deps[path]:
            visit(dep, into)
        order.append(path)

    groups: list[set[str]] = []
    for name in wanted:
        name = name.replace("-", "_")
        if name in builtin:
            continue
        if name not in by_name:
            raise ImageError(f"initrd module {name!r} is neither in modules.dep nor built in")
        closure: set[str] = set()
        visit(by_name[name], closure)
        for g in [g for g in groups if g & closure]:
            groups.remove(g)
            closure |= g
        groups.append(closure)
    return [[p for p in order if p in g] for g in sorted(groups, key=lambda g: min(order.index(p) for p in g))]


def _modname(path: str) -> str:
    return re.sub(r"\.ko(\.[a-z]+)?$", "", path.rsplit("/", 1)[-1]).replace("-", "_")


def _kernel_and_initrd(recipe: Recipe, rootfs: Path, work: Path, log: Path) -> str:
    kver = _kernel_version(rootfs)
    (work / "vmlinux").write_bytes(extract_vmlinux((rootfs / "boot" / f"vmlinuz-{kver}").read_bytes()))
    mods = rootfs / "lib/modules" / kver
    builtin = {_modname(p) for p in (mods / "modules.builtin").read_text().split()}
    chains = module_chains((mods / "modules.dep").read_text(), builtin, recipe.initrd_modules)
    tree = work / "initrd"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib/modules").mkdir(parents=True)
    shutil.copy(rootfs / "bin/busybox", tree / "bin/busybox")
    names: list[list[str]] = []
    for chain in chains:
        names.append([])
        for path in chain:
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".xz"):  # busybox insmod takes plain modules (trixie's are XZ-compressed)
                name = name.removesuffix(".xz")
                (tree / "lib/modules" / name).write_bytes(lzma.decompress((mods / path).read_bytes()))
            else:
                shutil.copy(mods / path, tree / "lib/modules" / name)
            names[-1].append(name)
    _write(tree / "init", render("image/initrd-init.sh.j2", chains=names, marker_probe=MARKER_PROBE,
                                 marker_failed=MARKER_FAILED), 0o755)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with open(work / "initrd.img", "wb") as out, open(log, "a") as err:
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--reproducible"], cwd=tree,
                              input="\n".join(files).encode(), stdout=out, stderr=err, timeout=120)
    if proc.returncode != 0:
        raise ImageError(f"cpio failed building the initrd (log: {log})")
    shutil.rmtree(tree)
    return kver


def _root_disk(recipe: Recipe, rootfs: Path, work: Path, log: Path) -> None:
    raw = work / "root.ext4"
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(raw), f"{recipe.disk_size_mib}M"],
         log, 600, "mkfs.ext4")
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "root.qcow2")],
         log, 600, "qemu-img convert")
    raw.unlink()


def _package_versions(work: Path) -> dict[str, str]:
    """The image's bill of materials, as dpkg-query listed it after debootstrap."""
    return dict(line.split(" ", 1) for line in (work / "packages.txt").read_text().splitlines() if " " in line)
