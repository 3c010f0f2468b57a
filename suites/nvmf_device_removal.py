"""The NVMe-oF target's NIC is pulled under a live connection and I/O; service must come back.

Seed 003 (SPDK test/nvmf/target/device_removal.sh): on real mlx5 hardware pulling the RDMA NIC
under nvmf_tgt crashed or hung the node, and the test was disabled. Here the target and the host
are two machines of a bed joined by the network `fabric`; the target exports a namespace over
NVMe-oF, the host connects and runs I/O, and the target's fabric NIC is pulled and put back, its
address again: by QEMU (device_del, device_add) under the kernel target, and under nvmf_tgt as
device_removal.sh does it (the guest removes the NIC's PCI device in sysfs, then rescans). Pass:
the target lets go of the NIC (DEVICE_DELETED, or the sysfs removal returns), the host sees the
path go within its bound and come back, I/O after the return works, and nothing crashed on either
machine.

Variants: target {kernel (nvmet, its NVMe namespace; its port linked anew after the return, or its
RDMA listener stays dead), spdk (nvmf_tgt, a malloc bdev; over RDMA it must find the new device by
itself, as device_removal.sh waits for it in nvmf_get_stats)} x host {kernel (nvme-cli connect,
fio; it must see the path go within fast_io_fail_tmo's bound), spdk (bdevperf as device_removal.sh
runs it: verify I/O on a controller that reconnects forever, which must finish without error; over
TCP with SPDK's defaults nothing resets a connection that merely fell silent, so it may ride the
outage out on TCP retransmissions: its state is reported, not required to change)} x {tcp, rdma
(soft-RoCE)}.
The target's hung-task timeout is short, so a target stuck tearing its NIC down (seen with RDMA on
kernel 6.1: suites/known_failures.toml) is a guest crash with its title and stacks, not a silent hang.
"""

from __future__ import annotations

import time

from orchestrator.engine.fixtures import Fabric, Faults
from orchestrator.guest import nvmf
from orchestrator.guest.load import Fio
from orchestrator.machines import Machine
from orchestrator.spdk import nvmf as spdk_nvmf
from orchestrator.spdk.bdevperf import BDEVPERF, Bdevperf

BED = "pair"
TIMEOUT = 150  # seconds per test under KVM (scaled for TCG)
NQN = "nqn.2026-12.io.tbctl:device-removal"
SPDK_HOST_APP = BDEVPERF
FAST_IO_FAIL = 3  # seconds without a path before the kernel host fails I/O
PATH_LOSS = 30  # seconds for the host to see the path go
RESTORE = 60  # seconds for the host to be live again once the NIC is back
RDMA_DEVICE_GONE, RDMA_DEVICE_BACK = 10, 20  # device_removal.sh's bounds on nvmf_get_stats (seconds)
BDEVPERF_SECONDS = 60  # long enough for the pull, the return and the reconnect under TCG
HUNG_TASK = 20  # the target's hung-task timeout (seconds): a stuck teardown is reported in time


def test_target_nic_pulled_under_io(machines: dict[str, Machine], fabric: Fabric, inject: Faults) -> None:
    """Pull the target's fabric NIC while the host reads and writes; put it back; service returns."""
    target, host = machines["target"], machines["host"]
    nic, transport = target.topology.nics[0], fabric.transport
    target.ssh.run(f"echo {HUNG_TASK} > /proc/sys/kernel/hung_task_timeout_secs", timeout=10, check=True)
    app = bdevperf = None
    try:
        if fabric.target == "spdk" and fabric.tree:
            app = spdk_nvmf.Target(target.ssh, fabric.tree, target.run_dir)
            app.export(NQN, transport, nic.ip)
        else:
            device = nvmf.block_device(target.ssh, target.topology.controllers[0].serial)
            nvmf.export(target.ssh, NQN, device, transport, nic.ip)
        if fabric.host == "spdk" and fabric.tree:
            bdevperf = Bdevperf(host.ssh, fabric.tree, host.run_dir, BDEVPERF_SECONDS)
            bdevperf.attach(**spdk_nvmf.controller(NQN, transport, nic.ip))
            bdevperf.start()
            bdevperf.wait_io(60)
            wait_state = bdevperf.wait_state
        else:
            ctrl = nvmf.connect(host.ssh, transport, nic.ip, NQN, fast_io_fail_tmo=FAST_IO_FAIL, ctrl_loss_tmo=600)
            dev = nvmf.namespace(host.ssh, ctrl)
            fio = Fio(host.ssh, dev, "--name=load --rw=randrw --bs=4k --direct=1 --ioengine=libaio --iodepth=8 "
                      "--time_based --runtime=600 --continue_on_error=all", timeout=900,
                      label=f"fio on {dev} over {transport}")
            fio.wait_io()

            def wait_state(states: tuple[str, ...], timeout: float) -> tuple[str, float]:
                return nvmf.wait_state(host.ssh, ctrl, states, timeout)
        link = inject.link(target, nic.id)
        via = "guest" if app is not None else "qmp"  # nvmf_tgt's NIC goes as device_removal.sh removes it
        link.remove(timeout=60, via=via)  # a target that cannot let go hangs here; its hung tasks end the test first
        if app is not None and transport == "rdma":
            wait_rdma_device(app, present=False, seconds=RDMA_DEVICE_GONE)
        if bdevperf is None:
            lost, after = wait_state(("connecting", "resetting"), PATH_LOSS)
        else:  # bdev_nvme notices over RDMA; over TCP nothing resets a silent connection (see above)
            lost, after = bdevperf.state(), 0.0
        link.add(via=via)
        if transport == "rdma":  # a new NIC: a new soft-RoCE device on it
            nvmf.rxe(target.ssh, nic.mac(target.topology.name))
        if app is None:
            nvmf.export(target.ssh, NQN, device, transport, nic.ip)  # the port linked anew
        elif transport == "rdma":
            wait_rdma_device(app, present=True, seconds=RDMA_DEVICE_BACK)
        _, back = wait_state(("live", "enabled"), RESTORE)
        if bdevperf is not None:
            result = bdevperf.finish()
            assert result["results"], f"bdevperf ran no job: {result}"
        else:
            read = host.ssh.run(f"dd if={dev} of=/dev/null bs=64k count=64 iflag=direct", timeout=60)
            report = fio.stop()
            assert read.ok, f"a read from {dev} after the NIC came back failed: {read.stderr.strip()[-300:]}"
            assert report["jobs"][0]["read"]["io_bytes"] > 0, f"{fio.label} did no I/O"
    finally:
        for part in (bdevperf, app):
            if part is not None:
                part.close()
    print(f"{transport}: path lost ({lost}) {after} s after the pull; live again {back} s after the return")


def wait_rdma_device(app: spdk_nvmf.Target, present: bool, seconds: float) -> None:
    """nvmf_tgt's transport let go of the pulled NIC's RDMA device, or found the new one itself."""
    deadline = time.monotonic() + seconds
    while bool(devices := app.rdma_devices()) != present:
        assert time.monotonic() < deadline, (
            f"nvmf_tgt still lists {devices} {seconds:g} s after its NIC was pulled" if devices else
            f"nvmf_tgt did not pick up the NIC's new RDMA device within {seconds:g} s (nvmf_get_stats lists none)")
        time.sleep(1)
