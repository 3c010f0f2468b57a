"""SPDK's bdevperf from the user's tree, driven over its JSON-RPC socket as SPDK's scripts drive
it (device_removal.sh, bdev_nvme's reset tests): idle until given a controller and told to run,
its I/O counted and its controller's state read while it runs, its verdict perform_tests' answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import DeadlineError, LoadFailed, MachineError, TbctlError
from orchestrator.guest import load
from orchestrator.guest.ssh import SSH
from orchestrator.spdk import runtime
from orchestrator.spdk.rpc import Rpc
from orchestrator.spdk.tree import Tree

BDEVPERF = "build/examples/bdevperf"
SOCKET = "/var/tmp/bdevperf.sock"
HUGEPAGES = 256  # bdev layer's buffer pools and 128 x 4 KiB buffers, DPDK's pools beside them


class Bdevperf:
    """SPDK's bdevperf as device_removal.sh runs it: started idle (-z), bdev_nvme's options set
    (`options`, over bdev retries unbounded), then given a controller, then 128-deep 4 KiB verify
    I/O for `seconds` on perform_tests, which answers once the run is over. A failed I/O ends the
    run, unless `go_on` (-f, as SPDK's failover.sh runs it: I/O in flight at a reset fails)."""

    def __init__(self, ssh: SSH, tree: Tree, run_dir: Path, seconds: int, options: Mapping[str, object] | None = None,
                 go_on: bool = False, timeout: float = 3600):
        self.ssh, self.run_dir, self.seconds = ssh, run_dir, seconds
        runtime.prepare(ssh, hugepages=HUGEPAGES)
        self.proc = runtime.serve(ssh, tree, BDEVPERF, ["-m", "0x1", "-z", "-q", "128", "-o", "4096", "-w",
                                                        "verify", "-t", str(seconds), *(["-f"] if go_on else [])],
                                  sock=SOCKET, timeout=timeout)
        self.rpc = Rpc(ssh, run_dir, SOCKET)
        self.rpc.call("bdev_nvme_set_options", **{"bdev_retry_count": -1, **(options or {})})
        self._run: threading.Thread | None = None
        self._outcome: dict[str, Any] = {}

    def attach(self, name: str = "Nvme0", **params: object) -> list[str]:
        """bdev_nvme_attach_controller `name` with `params` (a fabric's, spdk.nvmf.controller; or
        trtype PCIe and its traddr); the bdevs it made."""
        self.name = name
        return cast(list[str], self.rpc.call("bdev_nvme_attach_controller", name=name, **params))

    def start(self) -> None:
        """perform_tests, answered on a connection of its own once the run is over."""
        def run() -> None:
            try:
                with Rpc(self.ssh, self.run_dir, SOCKET, timeout=self.seconds + 120) as rpc:
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
