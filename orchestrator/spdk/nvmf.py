"""SPDK as an NVMe-oF target and initiator, from the user's tree: nvmf_tgt configured over its
JSON-RPC with SPDK's own client, as SPDK's test/nvmf scripts configure it (a transport, a malloc
bdev per subsystem, the subsystem, its namespace, its listener); as the initiator's load,
spdk_nvme_perf (its arguments and verdict as test/nvmf/target/shutdown.sh's tc4 uses them); a
fabric controller for bdevperf (spdk.bdevperf) as device_removal.sh attaches it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import MachineError
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.spdk import runtime
from orchestrator.spdk.rpc import Rpc
from orchestrator.spdk.tree import Tree

NVMF_TGT = "build/bin/nvmf_tgt"
PERF = "build/bin/spdk_nvme_perf"
SERVICE = 4420
MALLOC_MIB = 64  # SPDK's tests: MALLOC_BDEV_SIZE=64, MALLOC_BLOCK_SIZE=512
BLOCK = 512
# SPDK's NVMF_TRANSPORT_OPTS (test/nvmf/common.sh) with the `-u 8192` its target scripts add.
TRANSPORT_OPTS = {"tcp": {"io_unit_size": 8192, "c2h_success": False},
                  "rdma": {"io_unit_size": 8192, "num_shared_buffers": 1024}}
PERF_HUGEPAGES = 256  # -P 4 qpairs x -q 128 x 44 KiB buffers, DPDK's pools beside them


def trid(transport: str, address: str, nqn: str) -> str:
    """SPDK's transport ID string for subsystem `nqn` at `address`:4420."""
    return f"trtype:{transport.upper()} adrfam:IPV4 traddr:{address} trsvcid:{SERVICE} subnqn:{nqn}"


class Target:
    """nvmf_tgt from `tree`, running in the guest of `ssh` until `stop` (or its deadline)."""

    def __init__(self, ssh: SSH, tree: Tree, run_dir: Path, timeout: float = 3600):
        self.ssh = ssh
        runtime.prepare(ssh, hugepages=runtime.RPC_HUGEPAGES)
        self.proc: RemoteProcess = runtime.serve(ssh, tree, NVMF_TGT, ["-m", "0x1"], timeout=timeout)
        self.rpc = Rpc(ssh, run_dir)
        self._transports: set[str] = set()

    def export(self, nqn: str, transport: str, address: str, serial: str = "SPDK00000000000001") -> None:
        """Subsystem `nqn` with one malloc namespace, listening on `address`:4420 over `transport`."""
        if transport not in self._transports:
            self.rpc.call("nvmf_create_transport", trtype=transport.upper(), **TRANSPORT_OPTS[transport])
            self._transports.add(transport)
        bdev = f"Malloc{len(self.rpc.call('bdev_get_bdevs'))}"
        self.rpc.call("bdev_malloc_create", num_blocks=MALLOC_MIB * 1024 * 1024 // BLOCK, block_size=BLOCK, name=bdev)
        self.rpc.call("nvmf_create_subsystem", nqn=nqn, allow_any_host=True, serial_number=serial)
        self.rpc.call("nvmf_subsystem_add_ns", nqn=nqn, namespace={"bdev_name": bdev})
        self.listen(nqn, transport, address)

    def listen(self, nqn: str, transport: str, address: str) -> None:
        """(Again) a listener of `nqn` on `address`, as SPDK's device_removal.sh re-adds one."""
        self.rpc.call("nvmf_subsystem_add_listener", nqn=nqn, listen_address={
            "trtype": transport.upper(), "adrfam": "IPv4", "traddr": address, "trsvcid": str(SERVICE)})

    def stop(self, sig: str = "TERM", timeout: float = 60) -> Result:
        """The app signalled (TERM: SPDK's killprocess) and waited for; its exit as a Result."""
        self.rpc.close()
        self.proc.signal(sig)
        return self.proc.wait(timeout)

    def rdma_devices(self) -> list[str]:
        """The RDMA devices the target's transport serves on (nvmf_get_stats, as device_removal.sh
        reads it): a pulled NIC's device leaves the list, a new one joins it."""
        stats = self.rpc.call("nvmf_get_stats")
        try:
            return sorted({d["name"] for g in stats["poll_groups"] for t in g["transports"] if t["trtype"] == "RDMA"
                           for d in t.get("devices", [])})
        except (KeyError, TypeError):
            raise MachineError(f"nvmf_get_stats: not the poll groups SPDK answers with: {str(stats)[:300]}") from None

    def close(self) -> None:
        """Whatever is left of it gone (after a test that failed half-way)."""
        self.rpc.close()
        if self.proc in self.ssh.active:
            self.proc.kill()


def controller(nqn: str, transport: str, address: str) -> dict[str, object]:
    """bdev_nvme_attach_controller's parameters for `nqn` at `address`:4420, as device_removal.sh
    gives them: a controller that reconnects forever, 1 s apart (-l -1 -o 1)."""
    return {"trtype": transport.upper(), "traddr": address, "adrfam": "IPv4", "trsvcid": str(SERVICE), "subnqn": nqn,
            "ctrlr_loss_timeout_sec": -1, "reconnect_delay_sec": 1}


def perf(ssh: SSH, tree: Tree, targets: list[str], seconds: int, timeout: float) -> RemoteProcess:
    """spdk_nvme_perf as tc4 runs it: 128 deep, 44 KiB random writes in 4 KiB pieces (-O), 4
    qpairs per namespace, on every transport ID in `targets`."""
    runtime.prepare(ssh, hugepages=PERF_HUGEPAGES)
    args = ["-q", "128", "-o", "45056", "-O", "4096", "-w", "randwrite", "-t", str(seconds), "-P", "4"]
    for t in targets:
        args += ["-r", t]
    return ssh.start(runtime.command(tree, PERF, args), timeout=timeout, label="SPDK spdk_nvme_perf")
