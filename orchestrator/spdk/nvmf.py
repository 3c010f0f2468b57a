"""SPDK as an NVMe-oF target and initiator, from the user's tree: nvmf_tgt configured over its
JSON-RPC with SPDK's own client, as SPDK's test/nvmf scripts configure it (a transport, a malloc
bdev per subsystem, the subsystem, its namespace, its listener); as the initiator's load,
spdk_nvme_perf (its arguments and verdict as test/nvmf/target/shutdown.sh's tc4 uses them) and
bdevperf (as device_removal.sh drives it: a controller that reconnects forever, verify I/O)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import DeadlineError, LoadFailed, MachineError, TbctlError
from orchestrator.guest import load
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.spdk import runtime
from orchestrator.spdk.rpc import Rpc
from orchestrator.spdk.tree import Tree

NVMF_TGT = "build/bin/nvmf_tgt"
PERF = "build/bin/spdk_nvme_perf"
BDEVPERF = "build/examples/bdevperf"
BDEVPERF_SOCKET = "/var/tmp/bdevperf.sock"
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


class Bdevperf:
    """SPDK's bdevperf as device_removal.sh runs it: started idle (-z), then given a controller
    that reconnects forever, 1 s apart (-l -1 -o 1, bdev retries unbounded), then 128-deep 4 KiB
    verify I/O for `seconds` on perform_tests, which answers once the run is over."""

    def __init__(self, ssh: SSH, tree: Tree, run_dir: Path, seconds: int, timeout: float = 3600):
        self.ssh, self.run_dir, self.seconds = ssh, run_dir, seconds
        runtime.prepare(ssh, hugepages=PERF_HUGEPAGES)
        self.proc = runtime.serve(ssh, tree, BDEVPERF, ["-m", "0x1", "-z", "-q", "128", "-o", "4096", "-w", "verify",
                                                        "-t", str(seconds)], sock=BDEVPERF_SOCKET, timeout=timeout)
        self.rpc = Rpc(ssh, run_dir, BDEVPERF_SOCKET)
        self.rpc.call("bdev_nvme_set_options", bdev_retry_count=-1)
        self._run: threading.Thread | None = None
        self._outcome: dict[str, Any] = {}

    def attach(self, nqn: str, transport: str, address: str, name: str = "Nvme0") -> list[str]:
        """Connect to `nqn` at `address`:4420; the bdevs it made."""
        self.name = name
        return cast(list[str], self.rpc.call("bdev_nvme_attach_controller", name=name, trtype=transport.upper(),
                                             traddr=address, adrfam="IPv4", trsvcid=str(SERVICE), subnqn=nqn,
                                             ctrlr_loss_timeout_sec=-1, reconnect_delay_sec=1))

    def start(self) -> None:
        """perform_tests, answered on a connection of its own once the run is over."""
        def run() -> None:
            try:
                with Rpc(self.ssh, self.run_dir, BDEVPERF_SOCKET, timeout=self.seconds + 120) as rpc:
                    self._outcome["result"] = rpc.call("perform_tests")
            except TbctlError as e:
                self._outcome["error"] = e
        self._run = threading.Thread(target=run, name="bdevperf perform_tests", daemon=True)
        self._run.start()

    def wait_io(self, timeout: float) -> int:
        """Until its bdev's completed I/O count grows (perform_tests' I/O under way): the count.
        LoadFailed if bdevperf ends first, or no I/O completes within `timeout`."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            if self.proc.poll():
                raise load.failed(self.proc.label, self.proc.wait(30), "before doing any I/O")
            stats = self.rpc.call("bdev_get_iostat").get("bdevs", [])
            done = sum(b.get("num_read_ops", 0) + b.get("num_write_ops", 0) for b in stats)
            if last is not None and done > last:
                return int(done)
            if time.monotonic() > deadline:
                raise LoadFailed(f"{self.proc.label}: no I/O completed within {timeout:g} s of perform_tests "
                                 f"(bdev_get_iostat: {stats}); {self._outcome.get('error') or 'still running'}",
                                 label=self.proc.label, seconds=timeout, output=self.proc.output())
            last = done
            time.sleep(0.2)

    def state(self) -> str:
        """The controller's state as bdev_nvme reports it: enabled, resetting, reconnect_is_delayed, failed..."""
        ctrls = self.rpc.call("bdev_nvme_get_controllers", name=self.name)
        try:
            return str(ctrls[0]["ctrlrs"][0]["state"])
        except (IndexError, KeyError, TypeError):
            raise MachineError(f"bdev_nvme_get_controllers {self.name}: no controller state in {str(ctrls)[:300]}") \
                from None

    def wait_state(self, states: tuple[str, ...], timeout: float) -> tuple[str, float]:
        start = time.monotonic()
        while (s := self.state()) not in states:
            if time.monotonic() - start > timeout:
                raise DeadlineError(f"bdevperf's controller {self.name}: still {s!r}, not {'/'.join(states)} after "
                                    f"{timeout:g} s", what=f"controller {self.name}", seconds=timeout)
            time.sleep(0.5)
        return s, round(time.monotonic() - start, 2)

    def finish(self) -> dict[str, Any]:
        """perform_tests' answer once the run is over (its error raised as it came)."""
        assert self._run is not None
        self._run.join(self.seconds + 180)
        if self._run.is_alive():
            raise DeadlineError(f"bdevperf: perform_tests did not answer within {self.seconds + 180} s",
                                what="bdevperf perform_tests", seconds=self.seconds + 180)
        if "error" in self._outcome:
            raise self._outcome["error"]
        return cast(dict[str, Any], self._outcome["result"])

    def close(self) -> None:
        """Stopped the way SPDK stops it (SIGINT), or killed when it does not go: after a test
        that failed, its own error is the one to report."""
        self.rpc.close()
        if self.proc in self.ssh.active:
            try:
                self.proc.signal("INT")
                self.proc.wait(30)
            except TbctlError:
                pass  # killed by wait(); its output is in commands.log


def perf(ssh: SSH, tree: Tree, targets: list[str], seconds: int, timeout: float) -> RemoteProcess:
    """spdk_nvme_perf as tc4 runs it: 128 deep, 44 KiB random writes in 4 KiB pieces (-O), 4
    qpairs per namespace, on every transport ID in `targets`."""
    runtime.prepare(ssh, hugepages=PERF_HUGEPAGES)
    args = ["-q", "128", "-o", "45056", "-O", "4096", "-w", "randwrite", "-t", str(seconds), "-P", "4"]
    for t in targets:
        args += ["-r", t]
    return ssh.start(runtime.command(tree, PERF, args), timeout=timeout, label="SPDK spdk_nvme_perf")
