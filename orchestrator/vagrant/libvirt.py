"""What the top-level Vagrantfile boots with vagrant-libvirt on libvirt's system QEMU, from the
same topology files and image as `tbctl up`.

The image boots its kernel directly, and vagrant-libvirt has no NVMe disk: the Vagrantfile gets
the kernel, initrd and command line, and the devices as `libvirt.qemuargs` rendered by the
template tbctl's own QEMU uses (vm.devices). Files that libvirt's QEMU opens itself (kernel,
initrd, NVMe backing files) must be readable by libvirt's QEMU user: they live under libvirt's
own images directory, one directory per machine, made before `vagrant up` and removed after
`vagrant destroy` (the Vagrantfile's triggers). The guest takes its address by DHCP from
vagrant-libvirt's management network, kept isolated (no route off this host).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import guest, image
from orchestrator.config import topology
from orchestrator.config.topology import Topology
from orchestrator.errors import ConfigError
from orchestrator.image import DHCP_FLAG, box
from orchestrator.machines import environment
from orchestrator.paths import cache_dir
from orchestrator.render import render
from orchestrator.spdk.runtime import MOUNT
from orchestrator.vm import devices
from orchestrator.vm.machine import kernel_cmdline

LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_USER = "libvirt-qemu"  # Debian's build default, when qemu.conf does not set `user`
KVM = Path("/dev/kvm")


@dataclass(frozen=True)
class VagrantMachine:
    topology: Topology
    image: image.Image
    project: Path  # the directory of the Vagrantfile: machines of two projects never share files
    accel: str  # tcg or kvm, as `tbctl up` would choose

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def dir(self) -> Path:
        project = hashlib.sha256(str(self.project.resolve()).encode()).hexdigest()[:8]
        return LIBVIRT_IMAGES / "tbctl-vagrant" / f"{project}-{self.name}"


def machines(topology_files: list[str], project: Path, image_name: str | None,
             spdk_dir: Path | None) -> list[VagrantMachine]:
    """One machine per topology file (the built-in default topology when there is none), each
    checked for what Vagrant cannot give it before any image is built."""
    if spdk_dir is not None and not readable_by_others(spdk_dir):
        raise ConfigError(f"--spdk-dir {spdk_dir}: libvirt's QEMU runs as its own user and cannot read it "
                          "(a directory on the way is not o+x, or the tree not o+r); use a tree others may read")
    topos = [topology.load(f) for f in topology_files] or [topology.default()]
    seen: set[str] = set()
    for t in topos:
        for field, bad, why in (("nic", t.nics, "networks between machines need a bed: tbctl up --bed"),
                                ("machine.iommu", t.iommu, "libvirt's domain has no vIOMMU here: tbctl up"),
                                ("machine.qemu", t.qemu, "libvirt starts its own QEMU")):
            if bad:
                raise ConfigError(f"{t.source}: field '{field}': not under Vagrant ({why})")
        if t.name in seen:
            raise ConfigError(f"{t.source}: field 'machine.name': {t.name!r} is taken by another topology; "
                              "each Vagrant machine needs its own")
        seen.add(t.name)
    ms = []
    for t in topos:
        env = environment.resolve(t, image_name, None, spdk_dir)
        ms.append(VagrantMachine(t, env.image, project, env.accel))
    return ms


def readable_by_others(path: Path) -> bool:
    """Whether a user other than its owner can reach and read `path` (libvirt's QEMU user must)."""
    path = path.resolve()
    dirs = [path, *path.parents] if path.is_dir() else list(path.parents)
    return all(d.stat().st_mode & 0o001 for d in dirs) and bool(path.stat().st_mode & 0o004)


def ssh_config(img: image.Image) -> Path:
    """An OpenSSH client file (read by `vagrant ssh` and by Vagrant's own Net::SSH) that pins the
    image's host key: Vagrant otherwise connects with host key checking off."""
    path = cache_dir() / "vagrant" / f"{img.manifest['name']}-{img.digest}.ssh_config"
    options = [("IdentitiesOnly", "yes"), ("GlobalKnownHostsFile", str(img.dir / "known_hosts")),
               ("UserKnownHostsFile", "/dev/null"), ("HostKeyAlias", image.HOST_KEY_ALIAS),
               ("StrictHostKeyChecking", "yes"), ("ForwardAgent", "no"), ("LogLevel", "ERROR")]
    text = render("ssh/config.j2", hosts=[{"alias": "*", "options": options}], written="")
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def config(ms: list[VagrantMachine], spdk_dir: Path | None) -> dict[str, Any]:
    """What the Vagrantfile sets for each machine (JSON on stdout of `tbctl vagrant config`)."""
    shares = environment.shares(spdk_dir)
    out = []
    for m in ms:
        out.append({
            "name": m.name, "box": box.name(m.image), "box_url": box.ensure(m.image).as_uri(),
            "driver": "kvm" if m.accel == "kvm" else "qemu",
            "cpu_mode": "host-passthrough" if m.accel == "kvm" else "maximum",
            "memory": m.topology.memory_mib, "cpus": m.topology.cpus,
            "kernel": str(m.dir / "vmlinux"), "initrd": str(m.dir / "initrd.img"),
            "cmdline": f"{kernel_cmdline(m.image, m.topology, m.accel)} {DHCP_FLAG}",
            "qemuargs": devices.args(m.topology, m.dir / "nvme", shares),
            "private_key": str(m.image.client_key), "ssh_config": str(ssh_config(m.image)),
            "provision": guest.mount_command("spdk", MOUNT) if shares else "",
        })
    return {"machines": out}


def _qemu_owner() -> tuple[int, int] | None:
    """The uid and gid libvirt runs QEMU as (qemu.conf's `user`/`group`, else Debian's default)."""
    conf = QEMU_CONF.read_text() if QEMU_CONF.is_file() else ""
    found = dict(re.findall(r'^\s*(user|group)\s*=\s*"([^"]+)"', conf, re.M))
    user = found.get("user", QEMU_USER).lstrip("+")  # a name, or +UID
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        gid = grp.getgrnam(found["group"]).gr_gid if "group" in found else pw.pw_gid
    except KeyError:
        return None
    return pw.pw_uid, gid


def kvm_warning(dev: Path = KVM) -> str | None:
    """Why `vagrant up` may crawl here: /dev/kvm there but closed to libvirt's QEMU user (a host
    without udev's rule, which gives it 0660 root:kvm). libvirt then finds its cached QEMU
    capabilities stale ("KVM was enabled when probing ..., but it is not available now") and probes
    QEMU again at every lookup: about a minute per machine under TCG. The domains do not use KVM."""
    owner = _qemu_owner()
    if owner is None or not dev.exists():
        return None
    uid, gid = owner
    user = pwd.getpwuid(uid).pw_name
    groups = {gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    st = dev.stat()
    mode = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid in groups else st.st_mode
    if mode & 0o6 == 0o6:
        return None
    owner_name = next((p.pw_name for p in pwd.getpwall() if p.pw_uid == st.st_uid), str(st.st_uid))
    group_name = next((g.gr_name for g in grp.getgrall() if g.gr_gid == st.st_gid), str(st.st_gid))
    return (f"{dev} ({st.st_mode & 0o777:04o} {owner_name}:{group_name}) is not open to libvirt's QEMU user "
            f"{user}: libvirt then probes QEMU again at every call, about a minute more per machine; udev's rule "
            "on Debian makes it 0660 root:kvm")


def prepare(m: VagrantMachine) -> None:
    """The files libvirt's QEMU reads for `m`: the image's kernel and initrd (anew: the image may
    have changed), and NVMe backing files (kept: a namespace keeps its data across `vagrant halt`)."""
    m.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(m.dir.parent, 0o711)
    os.chmod(m.dir, 0o711)
    for src in (m.image.kernel, m.image.initrd):
        shutil.copyfile(src, m.dir / src.name)
        os.chmod(m.dir / src.name, 0o644)
    nvme_dir = m.dir / "nvme"
    if not nvme_dir.is_dir():
        made = devices.create_backing(m.topology, nvme_dir)
        if owner := _qemu_owner():
            for p in [nvme_dir, *made]:
                os.chown(p, *owner)
        os.chmod(nvme_dir, 0o700)


def clean(m: VagrantMachine) -> bool:
    """Remove `m`'s files (after `vagrant destroy`); whether there were any."""
    if not m.dir.exists():
        return False
    shutil.rmtree(m.dir)
    parent = m.dir.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return True
