#!/usr/bin/python3
"""Stand-in for SPDK's test/nvme/doorbell_aers (see ../README.md): same argument, same lines.

A tiny polled userspace NVMe driver, as SPDK's is: the controller must be bound to
uio_pci_generic; BAR0 through sysfs resource0, queues and buffers in one 2 MiB hugepage whose
physical address comes from /proc/self/pagemap (no IOMMU). It resets and enables the controller,
creates I/O queue pair 1 of 32 entries, arms Asynchronous Event Requests, then for each case
writes an invalid doorbell and waits, with no deadline of its own, for the Error AER and reads
log page 01h. SIGINT/SIGTERM end a wait with "Failure: CASE", and it still exits 0, as SPDK's does.
The file NO_AER_KNOB in the guest makes it arm no AER: a driver regression for tbctl's own tests.
"""

import ctypes
import mmap
import os
import re
import signal
import struct
import sys
import time

IO_QUEUE_SIZE = 32
ADMIN_QUEUE_SIZE = 32
HUGEPAGE = 2 << 20
MAP_HUGETLB = 0x40000
# Offsets in the DMA page.
ASQ, ACQ, IOSQ, IOCQ, IDENTIFY, LOG = 0x0000, 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
EVENT_TYPE_ERROR, LOG_ERROR = 0x0, 0x01
INFO_WRITE_INVALID_DB, INFO_INVALID_DB_WRITE = 0x0, 0x1
NO_AER_KNOB = "/run/spdk-standin/no-aer"

exiting = False


def err(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    err(msg)
    sys.exit(1)


def out(msg):
    print(msg, flush=True)


def on_signal(signo, frame):
    global exiting
    exiting = True


class Controller:
    def __init__(self, bdf):
        dev = f"/sys/bus/pci/devices/{bdf}"
        driver = os.path.basename(os.readlink(f"{dev}/driver")) if os.path.exists(f"{dev}/driver") else None
        if driver != "uio_pci_generic":
            die(f"spdk_nvme_connect() failed for transport address '{bdf}'")
        fd = os.open(f"{dev}/resource0", os.O_RDWR | os.O_SYNC)
        self.bar = mmap.mmap(fd, os.path.getsize(f"{dev}/resource0"))
        os.close(fd)
        self._enable_bus_master(f"{dev}/config")
        try:
            self.mem = mmap.mmap(-1, HUGEPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)
        except OSError:
            die("Unable to initialize SPDK env")  # no free hugepage
        self.mem[0:HUGEPAGE] = bytes(HUGEPAGE)  # fault the page in
        self.phys = physical_address(ctypes.addressof(ctypes.c_char.from_buffer(self.mem)))
        cap = self.reg32(0x0) | self.reg32(0x4) << 32
        self.stride = 4 << ((cap >> 32) & 0xF)
        self.ready_timeout = ((cap >> 24) & 0xFF) * 0.5 or 1.0
        self.cid = 0
        self.queues = {}  # qid -> [sq offset, sq tail, cq offset, cq head, phase, size]

    @staticmethod
    def _enable_bus_master(config):
        """As DPDK does for a uio device: memory space and bus master on in the command register."""
        with open(config, "r+b", buffering=0) as f:
            f.seek(4)
            cmd = struct.unpack("<H", f.read(2))[0]
            f.seek(4)
            f.write(struct.pack("<H", cmd | 0x6))

    def reg32(self, off):
        return ctypes.c_uint32.from_buffer(self.bar, off).value

    def write32(self, off, value):
        """One aligned 32-bit store (a doorbell split into two stores corrupts QEMU's view)."""
        ctypes.c_uint32.from_buffer(self.bar, off).value = value

    def doorbell(self, qid, cq):
        return 0x1000 + (2 * qid + cq) * self.stride

    def _wait_csts(self, mask, want, what):
        deadline = time.monotonic() + self.ready_timeout
        while self.reg32(0x1C) & mask != want:
            if self.reg32(0x1C) & 0x2:
                die(f"controller fatal status while waiting for {what}")
            if time.monotonic() > deadline:
                die(f"timed out waiting for {what} (CSTS={self.reg32(0x1C):#x})")
            time.sleep(0.001)

    def enable(self):
        self.write32(0x14, 0)
        self._wait_csts(0x1, 0, "CSTS.RDY = 0")
        self.write32(0x24, (ADMIN_QUEUE_SIZE - 1) << 16 | (ADMIN_QUEUE_SIZE - 1))
        for off, addr in ((0x28, self.phys + ASQ), (0x30, self.phys + ACQ)):
            self.write32(off, addr & 0xFFFFFFFF)
            self.write32(off + 4, addr >> 32)
        self.queues[0] = [ASQ, 0, ACQ, 0, 1, ADMIN_QUEUE_SIZE]
        self.write32(0x14, 4 << 20 | 6 << 16 | 1)  # IOCQES 16 B, IOSQES 64 B, MPS 4 KiB, NVM, EN
        self._wait_csts(0x1, 0x1, "CSTS.RDY = 1")

    def submit(self, qid, opc, nsid=0, prp1=0, cdw10=0, cdw11=0):
        q = self.queues[qid]
        self.cid = (self.cid + 1) & 0xFFFF
        sqe = struct.pack("<BBHI8x8xQ8xIIIIII", opc, 0, self.cid, nsid, prp1, cdw10, cdw11, 0, 0, 0, 0)
        self.mem[q[0] + q[1] * 64:q[0] + q[1] * 64 + 64] = sqe
        q[1] = (q[1] + 1) % q[5]
        self.write32(self.doorbell(qid, 0), q[1])
        return self.cid

    def poll(self, qid):
        """The next completion of queue `qid` as (cid, status, dw0), or None."""
        q = self.queues[qid]
        off = q[2] + q[3] * 16
        dw0, _, _, dw3 = struct.unpack_from("<IIII", self.mem, off)
        if (dw3 >> 16) & 1 != q[4]:
            return None
        q[3] = (q[3] + 1) % q[5]
        if q[3] == 0:
            q[4] ^= 1
        self.write32(self.doorbell(qid, 1), q[3])
        return dw3 & 0xFFFF, dw3 >> 17, dw0

    def admin(self, opc, what, **fields):
        """An admin command waited for (init-time commands, under the controller's timeout)."""
        cid = self.submit(0, opc, **fields)
        deadline = time.monotonic() + max(self.ready_timeout, 5.0)
        while time.monotonic() < deadline:
            cpl = self.poll(0)
            if cpl is None:
                time.sleep(0.001)
                continue
            if cpl[0] != cid:
                continue
            if cpl[1]:
                die(f"{what} failed: status {cpl[1]:#x}")
            return cpl[2]
        die(f"{what}: no completion within {max(self.ready_timeout, 5.0):g} s")

    def shutdown(self):
        self.write32(0x14, self.reg32(0x14) | 1 << 14)
        deadline = time.monotonic() + self.ready_timeout
        while (self.reg32(0x1C) >> 2) & 3 != 2 and time.monotonic() < deadline:
            time.sleep(0.001)


def physical_address(vaddr):
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(vaddr // 4096 * 8)
        entry = struct.unpack("<Q", f.read(8))[0]
    if not entry >> 63 or not entry & ((1 << 55) - 1):
        die("Unable to initialize SPDK env")
    return (entry & ((1 << 55) - 1)) * 4096 + vaddr % 4096


class Test:
    def __init__(self, ctrl):
        self.c = ctrl
        ctrl.admin(0x06, "identify controller", prp1=ctrl.phys + IDENTIFY, cdw10=1)
        self.aerl = ctrl.mem[IDENTIFY + 259]
        self.elpe = ctrl.mem[IDENTIFY + 262]
        ctrl.admin(0x05, "create io cq", prp1=ctrl.phys + IOCQ, cdw10=(IO_QUEUE_SIZE - 1) << 16 | 1, cdw11=1)
        ctrl.admin(0x01, "create io sq", prp1=ctrl.phys + IOSQ, cdw10=(IO_QUEUE_SIZE - 1) << 16 | 1,
                   cdw11=1 << 16 | 1)
        ctrl.queues[1] = [IOSQ, 0, IOCQ, 0, 1, IO_QUEUE_SIZE]
        self.qpair_id = 1
        self.aers = set()
        # A driver regression on demand (tests/engine_suites): with this file present, no AER is
        # armed, so the controller has none to complete and the first case waits forever.
        armed = 0 if os.path.exists(NO_AER_KNOB) else min(self.aerl + 1, 4)
        for _ in range(armed):
            self.aers.add(ctrl.submit(0, 0x0C))
        self.log_cid = None
        self.expected = None
        self.done = False

    def process_admin_completions(self):
        """Handle one admin completion; False when there was none."""
        cpl = self.c.poll(0)
        if cpl is None:
            return False
        cid, status, dw0 = cpl
        if cid in self.aers:
            self.aers.discard(cid)
            out("Asynchronous Event received.")
            if status:
                die("aer failed")
            typ, info, lid = dw0 & 0x7, (dw0 >> 8) & 0xFF, (dw0 >> 16) & 0xFF
            for name, got, want in (("type", typ, EVENT_TYPE_ERROR), ("info", info, self.expected),
                                    ("log page", lid, LOG_ERROR)):
                if got != want:
                    die(f"unexpected async event {name} {got:#x}")
            self.aers.add(self.c.submit(0, 0x0C))  # re-armed, as SPDK's driver does
            numd = min((self.elpe + 1) * 64, 4096) // 4 - 1
            self.log_cid = self.c.submit(0, 0x02, nsid=0xFFFFFFFF, prp1=self.c.phys + LOG,
                                         cdw10=(numd & 0xFFFF) << 16 | LOG_ERROR, cdw11=numd >> 16)
        elif cid == self.log_cid:
            if status:
                die("get error log page failed")
            out("Error Informaton Log Page received.")  # sic: SPDK's spelling
            self.done = True
        return True

    def run(self, name, info, doorbell, value):
        out(f"Executing: {name}")
        self.done, self.expected = False, info
        self.c.write32(doorbell, value)
        out("Waiting for AER completion...")
        while not exiting and not self.done:
            if not self.process_admin_completions():
                time.sleep(0.001)  # SPDK spins; a stand-in under TCG need not
        out(f"{'Success' if self.done else 'Failure'}: {name}\n")


def main():
    opts = sys.argv[1:]
    if len(opts) != 2 or opts[0] != "-r":
        print(f"{sys.argv[0]} options\n\t[-r <fmt> Transport ID for PCIe NVMe device]")
        return 1
    trid = dict(kv.split(":", 1) for kv in opts[1].split())
    if trid.get("trtype", "").lower() != "pcie" or "traddr" not in trid:
        err(f"Invalid transport ID format '{opts[1]}'")
        return 1
    bdf = trid["traddr"]
    if not re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", bdf):
        err(f"Invalid transport ID format '{opts[1]}'")
        return 1
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ctrl = Controller(bdf)
    ctrl.enable()
    t = Test(ctrl)
    q = t.qpair_id
    t.run("test_write_invalid_db", INFO_WRITE_INVALID_DB, ctrl.doorbell(q + 1, 0), 0)
    t.run("test_invalid_db_write_overflow_sq", INFO_INVALID_DB_WRITE, ctrl.doorbell(q, 0), IO_QUEUE_SIZE + 1)
    t.run("test_invalid_db_write_overflow_cq", INFO_INVALID_DB_WRITE, ctrl.doorbell(q, 1), IO_QUEUE_SIZE + 1)
    ctrl.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
