"""The top-level Vagrantfile: `vagrant up --provider libvirt` of a topology's machine, for real
(libvirt's system QEMU, under TCG here), and what `tbctl vagrant config` gives it."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tbctl

from orchestrator import image
from orchestrator.config import topology
from orchestrator.vm.machine import QemuMachine

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "topology.toml"
LIBVIRT = "qemu:///system"
DAEMONS = ("virtlogd", "libvirtd")


def virsh(*args: str, check: bool = True) -> str:
    r = subprocess.run(["virsh", "-c", LIBVIRT, "-q", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 or not check, (args, r.stderr)
    return r.stdout


def answers() -> bool:
    return subprocess.run(["virsh", "-c", LIBVIRT, "version"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[None]:
    """libvirt's daemons, started if they are not running (a host without systemd, like CI's),
    and stopped again afterwards if this started them."""
    if answers():
        yield
        return
    systemd = shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()
    if systemd:
        subprocess.run(["systemctl", "start", "libvirtd"], check=True, timeout=120)
    else:
        for daemon in DAEMONS:
            subprocess.run([f"/usr/sbin/{daemon}", "-d"], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not answers():
        assert time.monotonic() < deadline, "libvirtd did not answer within 60 s of its start"
        time.sleep(1)
    yield
    if systemd:
        subprocess.run(["systemctl", "stop", "libvirtd"], timeout=120)
        return
    for daemon in reversed(DAEMONS):
        pid = int(Path(f"/run/{daemon}.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return tbctl(tmp_path, "vagrant", "config", "--project", str(tmp_path), *args)


@pytest.mark.vm  # builds the guest image
def test_the_vagrantfile_gets_the_devices_tbctl_itself_boots(tmp_path: Path, guest_image: image.Image) -> None:
    r = config(tmp_path, "--topology", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)["machines"]
    topo = topology.load(EXAMPLE)
    assert m["name"] == topo.name
    # the same device lines as tbctl's own QEMU command line, only the backing files elsewhere
    own = QemuMachine(topo, guest_image, tmp_path, name="same")
    ours = "\n".join(own.argv(2222)).replace(str(own.run_dir / "nvme"), "NVME")
    theirs = "\n".join(m["qemuargs"]).replace(str(Path(m["kernel"]).parent / "nvme"), "NVME")
    assert theirs.count("-device") == 5 and theirs in ours, (theirs, ours)  # a root port, 2 nvme, 2 nvme-ns
    assert m["cmdline"].endswith(" tbctl.net=dhcp") and "root=/dev/vda" in m["cmdline"]
    with tarfile.open(m["box_url"].removeprefix("file://")) as box:
        assert sorted(box.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        meta = json.load(box.extractfile("metadata.json"))  # type: ignore[arg-type]
        assert meta["provider"] == "libvirt" and meta["format"] == "qcow2" and meta["virtual_size"] >= 1
    pinned = Path(m["ssh_config"]).read_text()
    assert "StrictHostKeyChecking yes" in pinned and f"GlobalKnownHostsFile {guest_image.dir / 'known_hosts'}" in pinned


@pytest.mark.vm
def test_what_vagrant_cannot_boot_is_one_line(tmp_path: Path, guest_image: image.Image) -> None:
    iommu = tmp_path / "iommu.toml"
    iommu.write_text('[machine]\nname = "io"\niommu = true\n')
    private = tmp_path / "private"
    (private / "spdk").mkdir(parents=True)
    os.chmod(private, 0o700)
    for args, expected in (
            (["--topology", str(iommu)], f"{iommu}: field 'machine.iommu': not under Vagrant"),
            (["--topology", str(EXAMPLE), "--topology", str(EXAMPLE)], "field 'machine.name': 'example' is taken"),
            (["--spdk-dir", str(private / "spdk")], "libvirt's QEMU runs as its own user and cannot read it")):
        r = config(tmp_path, *args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert len(r.stderr.splitlines()) == 1 and expected in r.stderr, (args, r.stderr)


def test_a_kvm_device_closed_to_libvirts_qemu_user_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt re-probes QEMU at every call when /dev/kvm is closed to its QEMU user: `tbctl vagrant
    prepare` says so, with the mode it found; open to the user or one of its groups, nothing."""
    from orchestrator.vagrant import libvirt

    dev = tmp_path / "kvm"
    dev.touch()  # ours, in our group: libvirt's QEMU user is another user of that group
    me = os.getuid()
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(libvirt, "_qemu_owner", lambda: (nobody.pw_uid, dev.stat().st_gid))
    os.chmod(dev, 0o600)
    warning = libvirt.kvm_warning(dev)
    assert warning is not None and warning.startswith(f"{dev} (0600 {pwd.getpwuid(me).pw_name}:") and \
        "not open to libvirt's QEMU user nobody" in warning, warning
    os.chmod(dev, 0o660)  # through the user's group
    assert libvirt.kvm_warning(dev) is None
    os.chmod(dev, 0o640)  # read is not enough
    assert libvirt.kvm_warning(dev) is not None
    assert libvirt.kvm_warning(tmp_path / "absent") is None


@pytest.fixture(scope="module")
def kvm_as_debian_leaves_it() -> Iterator[None]:
    """/dev/kvm as udev's rule leaves it on Debian (0660 root:kvm) while Vagrant runs, and back as
    it was after: a host without udev (CI's container) has it 0600 root:root, and libvirt then
    probes QEMU again at every call (the warning above; several minutes of this test)."""
    dev = Path("/dev/kvm")
    kvm = next((g.gr_gid for g in grp.getgrall() if g.gr_name == "kvm"), None)
    if not dev.exists() or os.getuid() != 0 or kvm is None:
        yield
        return
    st = dev.stat()
    os.chown(dev, 0, kvm)
    os.chmod(dev, 0o660)
    try:
        yield
    finally:
        os.chown(dev, st.st_uid, st.st_gid)
        os.chmod(dev, st.st_mode & 0o7777)


@pytest.fixture
def project(tmp_path: Path, libvirtd: None, kvm_as_debian_leaves_it: None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory with the repository's Vagrantfile, a Vagrant home of its own, and afterwards
    `vagrant destroy -f`, the box removed from Vagrant and from libvirt's pool."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "Vagrantfile", proj / "Vagrantfile")
    second = tmp_path / "second.toml"  # a second machine: one controller, no hotplug
    second.write_text('[machine]\nname = "second"\n[[nvme]]\nid = "nvme0"\nserial = "TBCTL0003"\nhotplug = false\n')
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"), "TBCTL": str(Path(sys.executable).parent / "tbctl"),
           "TBCTL_TOPOLOGY": f"{EXAMPLE}:{second}", "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    pool_before = set(virsh("vol-list", "default", check=False).split())
    yield proj, env
    subprocess.run(["vagrant", "destroy", "-f"], cwd=proj, env=env, capture_output=True, timeout=300)
    subprocess.run(["vagrant", "box", "remove", "--all", "--force", json.loads(
        config(tmp_path, "--topology", str(EXAMPLE)).stdout)["machines"][0]["box"]], cwd=proj, env=env,
        capture_output=True, timeout=300)
    virsh("pool-refresh", "default", check=False)
    for vol in set(virsh("vol-list", "default", check=False).split()) - pool_before:
        if vol.startswith("tbctl-VAGRANTSLASH-"):
            virsh("vol-delete", "--pool", "default", vol, check=False)


@pytest.mark.vm
def test_vagrant_up_boots_the_topologies_and_destroy_leaves_nothing(project: tuple[Path, dict[str, str]]) -> None:
    proj, env = project

    def vagrant(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["vagrant", *args], cwd=proj, env=env, capture_output=True, text=True, timeout=timeout)

    up = vagrant("up", "--provider", "libvirt", "--no-parallel")
    assert up.returncode == 0, (up.stdout[-3000:], up.stderr[-3000:])
    domains = [f"{proj.name}_example", f"{proj.name}_second"]
    assert [virsh("domstate", d).strip() for d in domains] == ["running", "running"]
    # the example topology: nvme0 (TBCTL0001, one namespace) and nvme1 (TBCTL0002, two namespaces)
    for machine, serials in (("example", ["TBCTL0001", "TBCTL0002", "TBCTL0002"]), ("second", ["TBCTL0003"])):
        ls = vagrant("ssh", machine, "-c", "nvme list", timeout=120)
        assert ls.returncode == 0, ls.stderr
        rows = [line.split() for line in ls.stdout.splitlines() if line.startswith("/dev/nvme")]
        assert sorted(r[2] for r in rows) == serials, ls.stdout
    # the host key was checked against the image's (Vagrant's own default is to check nothing)
    cfg = vagrant("ssh-config", "example", timeout=120)
    assert "StrictHostKeyChecking no" not in cfg.stdout and "UserKnownHostsFile /dev/null" not in cfg.stdout, cfg.stdout
    files = [line.split()[-1] for line in (up.stdout + up.stderr).splitlines() if "NVMe backing files in " in line]

    down = vagrant("destroy", "-f", timeout=300)
    assert down.returncode == 0, down.stderr
    assert not set(domains) & set(virsh("list", "--all", "--name").split())
    assert len(files) == 2 and not any(Path(f).exists() for f in files), up.stderr[-2000:]
    for domain in domains:
        leftover = subprocess.run(["pgrep", "-f", f"guest={domain}"], capture_output=True, text=True)
        assert leftover.stdout == "", f"QEMU of {domain} still running: {leftover.stdout}"
