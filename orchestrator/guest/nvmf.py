"""NVMe over Fabrics with the guest kernel: a target (nvmet over configfs) and a host (nvme-tcp or
nvme-rdma through nvme-cli), over TCP, or RDMA on soft-RoCE (rdma_rxe on the fabric NIC).

Each machine gets a host NQN and host ID of its own (the image bakes one into /etc/nvme for every
VM, and two hosts with one NQN collide at a target). Wall-clock bounds come from
`fast_io_fail_tmo` (set in sysfs after connecting: nvme-cli 2.3 has no option for it) and the
caller's deadlines: `ctrl_loss_tmo` counts reconnect attempts, not seconds."""

from __future__ import annotations

import shlex
import time
import uuid

from orchestrator.errors import DeadlineError, MachineError
from orchestrator.guest import net, nvme
from orchestrator.guest.ssh import SSH, RemoteProcess
from orchestrator.render import render

TRANSPORTS = ("tcp", "rdma")
SERVICE = 4420
RXE_PREFIX = "rxe_"  # soft-RoCE device rxe_NAME is on NIC NAME
_IDS = uuid.UUID("5b2a1c3e-8f0d-4a6b-9d7e-1c2b3a4d5e6f")  # tbctl's namespace for host IDs


def prepare(ssh: SSH, name: str, transport: str, fabric_mac: str, peer: str, timeout: float = 30) -> None:
    """This guest ready for NVMe-oF over `transport`, in one guest command: a host NQN and host ID
    of its own, derived from the machine's name; for RDMA a soft-RoCE device on its fabric NIC
    (MAC `fabric_mac`); then, until `timeout`, its fabric carrying what a test will use: for RDMA
    that device's port ACTIVE, and (both transports) a connection to the peer's address possible,
    its route and neighbour resolved. Restored beds met SPDK's perf with "RDMA address resolution
    error" 5 runs in 8 when the load started before this held. MachineError saying what is missing."""
    host_id = uuid.uuid5(_IDS, name)
    script = render("guest/fabric.sh.j2", nqn=f"nqn.2014-08.org.nvmexpress:uuid:{host_id}", host_id=str(host_id),
                    rdma=transport == "rdma", soft_roce=soft_roce(fabric_mac), peer=peer, deadline=timeout)
    res = ssh.run("bash -s", timeout=timeout + 30, stdin=script.encode())
    if res.rc != 0:
        raise MachineError(f"the {transport} fabric is not ready within {timeout:g} s: "
                           f"{res.stdout.strip() or res.tail()}")


def block_device(ssh: SSH, serial: str) -> str:
    """The block device of this guest's NVMe controller with serial `serial` (what a kernel target exports)."""
    return "/dev/" + str(nvme.nvme_state(ssh)[serial]["block"][0])


def soft_roce(mac: str) -> str:
    """Shell that makes the soft-RoCE device on the NIC with MAC `mac` unless it is there, and
    sets $rxe to its name (exits non-zero where it cannot)."""
    return (net.find(mac) + f'rxe={shlex.quote(RXE_PREFIX)}"$dev"; modprobe rdma_rxe && '
            '{ rdma link show "$rxe/1" >/dev/null 2>&1 || rdma link add "$rxe" type rxe netdev "$dev"; }')


def rxe(ssh: SSH, mac: str, timeout: float = 30) -> str:
    """The soft-RoCE device on the NIC with MAC `mac` (made if it is not there); returns its name."""
    return ssh.run(soft_roce(mac) + ' && echo "$rxe"', timeout=timeout, check=True).stdout.strip()


def export(ssh: SSH, nqn: str, device: str, transport: str, address: str, port_id: int = 1,
           timeout: float = 30) -> None:
    """Serve block device `device` as namespace 1 of subsystem `nqn` on `address`:4420."""
    if transport not in TRANSPORTS:
        raise MachineError(f"transport {transport!r}: must be one of {', '.join(TRANSPORTS)}")
    script = render("guest/nvmet_port.sh.j2", nqn=nqn, device=device, transport=transport, address=address,
                    service=SERVICE, port_id=port_id)
    ssh.run("sh -s", timeout=timeout, stdin=script.encode(), check=True)


def unexport(ssh: SSH, nqn: str, port_id: int = 1, timeout: float = 30) -> None:
    ssh.run("sh -s", timeout=timeout, stdin=_remove(nqn, port_id), check=True)


def unexport_at(ssh: SSH, nqn: str, kernel_line: str, port_id: int = 1, timeout: float = 60) -> RemoteProcess:
    """Remove the export the moment this guest's kernel logs a line containing `kernel_line`, for
    a stop inside a window shorter than an SSH round trip; returns once the guest is watching."""
    proc = ssh.start("sh -s", timeout, stdin=_remove(nqn, port_id, after=kernel_line),
                     label=f"removal of {nqn} at {kernel_line!r}")
    if (line := proc.readline(timeout=30)) != "watching":
        proc.kill()
        raise MachineError(f"{proc.label}: the guest printed {line!r}, not 'watching'")
    return proc


def _remove(nqn: str, port_id: int, after: str = "") -> bytes:
    return render("guest/nvmet_remove.sh.j2", nqn=nqn, port_id=port_id, after=after).encode()


def connect(ssh: SSH, transport: str, address: str, nqn: str, fast_io_fail_tmo: int = 3, ctrl_loss_tmo: int = 60,
            reconnect_delay: int = 2, timeout: float = 60) -> str:
    """Connect this guest to subsystem `nqn` at `address`:4420; returns the controller's name
    (nvmeN). I/O fails after `fast_io_fail_tmo` s without a path; the controller is given up after
    `ctrl_loss_tmo` / `reconnect_delay` reconnect attempts."""
    q = shlex.quote
    ssh.run(f"modprobe nvme-{q(transport)} && nvme connect -t {q(transport)} -a {q(address)} -s {SERVICE} "
            f"-n {q(nqn)} --ctrl-loss-tmo={ctrl_loss_tmo:d} --reconnect-delay={reconnect_delay:d}",
            timeout=timeout, check=True)
    ctrl = controller(ssh, nqn)
    if ctrl is None:
        raise MachineError(f"nvme connect to {nqn} at {address} ({transport}) reported success, and no controller "
                           "of that subsystem is there")
    ssh.run(f"echo {fast_io_fail_tmo:d} > /sys/class/nvme/{ctrl}/fast_io_fail_tmo", timeout=10, check=True)
    return ctrl


def controller(ssh: SSH, nqn: str) -> str | None:
    """The fabrics controller of subsystem `nqn` in this guest, if one is connected."""
    out = ssh.run(f"for c in /sys/class/nvme-fabrics/ctl/nvme*; do [ \"$(cat $c/subsysnqn 2>/dev/null)\" = "
                  f"{shlex.quote(nqn)} ] && echo ${{c##*/}}; done; true", timeout=10, check=True).stdout.split()
    return out[0] if out else None


def reset(ssh: SSH, ctrl: str, timeout: float = 120) -> RemoteProcess:
    """Reset fabrics controller `ctrl`, as the kernel does itself after a transport error (queues
    torn down, the controller reconnected), without waiting: the sysfs write returns only once the
    first reconnect attempt ended."""
    return ssh.start(f"echo 1 > /sys/class/nvme/{shlex.quote(ctrl)}/reset_controller", timeout=timeout,
                     label=f"reset of {ctrl}")


def state(ssh: SSH, ctrl: str) -> str:
    """live, connecting, resetting, deleting, ... ('gone' once the controller was removed)."""
    out = ssh.run(f"cat /sys/class/nvme/{shlex.quote(ctrl)}/state 2>/dev/null || echo gone", timeout=10).stdout
    return out.strip() or "gone"


def wait_state(ssh: SSH, ctrl: str, states: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """Until controller `ctrl` is in one of `states`: (the state, seconds waited)."""
    start = time.monotonic()
    while (s := state(ssh, ctrl)) not in states:
        if time.monotonic() - start > timeout:
            raise DeadlineError(f"fabrics controller {ctrl}: still {s!r}, not {'/'.join(states)} after {timeout:g} s",
                                what=f"controller {ctrl}", seconds=timeout)
        time.sleep(0.5)
    return s, round(time.monotonic() - start, 2)


def namespace(ssh: SSH, ctrl: str, timeout: float = 30) -> str:
    """The block device (/dev/nvmeXnY) of the controller's first namespace, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        out = ssh.run(f"ls /sys/class/nvme/{shlex.quote(ctrl)}/ | grep -E '^nvme[0-9]+(c[0-9]+)?n[0-9]+$' | "
                      "sed 's/c[0-9]*n/n/' | head -n 1", timeout=10).stdout.strip()
        if out:
            return f"/dev/{out}"
        if time.monotonic() > deadline:
            raise DeadlineError(f"fabrics controller {ctrl}: no namespace within {timeout:g} s", what=ctrl,
                                seconds=timeout)
        time.sleep(0.5)


def disconnect(ssh: SSH, nqn: str, timeout: float = 60) -> None:
    """Drop the connection to `nqn` (nvme disconnect can block behind a pending RDMA reconnect:
    the deadline ends it)."""
    ssh.run(f"nvme disconnect -n {shlex.quote(nqn)}", timeout=timeout)


def clear(ssh: SSH, timeout: float = 60) -> None:
    """No NVMe-oF left in this guest: every fabrics controller disconnected, every nvmet port and
    subsystem taken down (nvme disconnect can block behind a pending RDMA reconnect: the
    deadline ends it)."""
    ssh.run("sh -s", timeout=timeout, stdin=render("guest/nvmf_clear.sh.j2").encode(), check=True)

