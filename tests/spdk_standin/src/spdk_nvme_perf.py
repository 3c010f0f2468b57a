#!/usr/bin/python3
"""Stand-in for SPDK's build/bin/spdk_nvme_perf (see ../README.md) over NVMe-oF: the same
arguments and lines, its I/O through the guest kernel's initiator (nvme-cli connect, O_DIRECT
writes), errors reported and the exit status given as perf does. With /run/spdk-standin/perf-assert
present, an RDMA connection that breaks ends as SPDK #3569 did: the ELF front end fails the
assertion in nvme_rdma_qpair_destroy (exit status QPAIR_WITHOUT_POLL_GROUP asks it to)."""

import getopt
import mmap
import os
import random
import re
import subprocess
import sys
import threading
import time

ASSERT_KNOB = "/run/spdk-standin/perf-assert"
QPAIR_WITHOUT_POLL_GROUP = 99  # app/main.c: fail the assertion in nvme_rdma_qpair_destroy


def stamp():
    now = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"


def say(msg, err=False):
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def parse_trid(text):
    trid = dict(kv.split(":", 1) for kv in text.split())
    if trid.get("trtype", "").upper() not in ("TCP", "RDMA") or "traddr" not in trid or "subnqn" not in trid:
        raise ValueError(f"Invalid transport ID format '{text}' (the stand-in needs trtype TCP or RDMA, traddr and "
                         "subnqn)")
    trid["trtype"] = trid["trtype"].upper()
    return trid


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True)


def connect(trid):
    """The kernel's controller for `trid`: I/O fails at once when the path goes, as perf's does."""
    tr, nqn = trid["trtype"].lower(), trid["subnqn"]
    sh("modprobe", f"nvme-{tr}")
    res = sh("nvme", "connect", "-t", tr, "-a", trid["traddr"], "-s", trid.get("trsvcid", "4420"), "-n", nqn,
             "--ctrl-loss-tmo=1", "--reconnect-delay=1")
    if res.returncode != 0:
        return None
    for ctrl in sorted(os.listdir("/sys/class/nvme-fabrics/ctl")):
        try:
            if open(f"/sys/class/nvme-fabrics/ctl/{ctrl}/subsysnqn").read().strip() == nqn:
                with open(f"/sys/class/nvme/{ctrl}/fast_io_fail_tmo", "w") as f:
                    f.write("0")
                for _ in range(100):  # its namespace's block device (nvmeXnY; nvmeXcZnY is a path of it)
                    devs = sorted(re.sub(r"c\d+n", "n", n) for n in os.listdir(f"/sys/class/nvme/{ctrl}")
                                  if re.fullmatch(r"nvme\d+(c\d+)?n\d+", n))
                    if devs and os.path.exists(f"/dev/{devs[0]}"):
                        return f"/dev/{devs[0]}"
                    time.sleep(0.1)
        except OSError:
            continue
    return None


class Worker(threading.Thread):
    """One qpair: writes of `size` bytes at random aligned offsets until told to stop or an error."""

    def __init__(self, dev, qid, size, ns_bytes, until, failed):
        super().__init__(daemon=True)
        self.dev, self.qid, self.size, self.ns_bytes, self.until, self.failed = dev, qid, size, ns_bytes, until, failed
        self.ios, self.error = 0, None

    def run(self):
        buf = mmap.mmap(-1, self.size)
        buf.write(os.urandom(self.size))
        fd = os.open(self.dev, os.O_WRONLY | os.O_DIRECT)
        blocks = self.ns_bytes // 4096 - self.size // 4096
        try:
            while time.monotonic() < self.until and not self.failed.is_set():
                try:
                    os.pwritev(fd, [buf], random.randrange(blocks) * 4096)
                    self.ios += 1
                except OSError as e:
                    self.error = e
                    self.failed.set()
        finally:
            os.close(fd)


def main():
    prog = sys.argv[0]
    try:
        opts, _ = getopt.getopt(sys.argv[1:], "q:o:O:w:t:r:P:c:M:s:i:L:l")
    except getopt.GetoptError as e:
        say(f"{prog}: {e}", err=True)
        return 1
    args = {}
    trids = []
    for k, v in opts:
        if k == "-r":
            try:
                trids.append(parse_trid(v))
            except ValueError as e:
                say(str(e), err=True)
                return 1
        else:
            args[k] = v
    if not trids or "-q" not in args or "-o" not in args or "-w" not in args or "-t" not in args:
        say(f"{prog} options: -q, -o, -w, -t and at least one -r are required", err=True)
        return 1
    if args["-w"] not in ("write", "randwrite"):
        say(f"{prog}: the stand-in does writes only (-w write|randwrite)", err=True)
        return 1
    size, seconds, qpairs = int(args["-o"]), int(args["-t"]), int(args.get("-P", "1"))
    say("Initializing NVMe Controllers")
    attached = []
    for trid in trids:
        name = f"{trid['trtype']} (addr:{trid['traddr']} subnqn:{trid['subnqn']})"
        dev = connect(trid)
        if dev is None:
            say(f"[{stamp()}] nvme.c: 739:nvme_ctrlr_probe: *ERROR*: Failed to create controller for {name}", err=True)
            continue
        say(f"Attached to NVMeoF Controller at {name}")
        say(f"Associating {name} NSID 1 with lcore 0")
        attached.append((trid, name, dev))
    if not attached:
        say("No valid NVMe controllers or AIO or URING devices found", err=True)
        return 1
    say("Initialization complete. Launching workers.")
    failed = threading.Event()
    started = time.monotonic()
    workers = []
    for trid, name, dev in attached:
        ns_bytes = int(open(f"/sys/block/{os.path.basename(dev)}/size").read()) * 512
        for qid in range(1, qpairs + 1):
            workers.append((trid, name, Worker(dev, qid, size, ns_bytes, started + seconds, failed)))
    for _, _, w in workers:
        w.start()
    for _, _, w in workers:
        w.join()
    elapsed = max(time.monotonic() - started, 1e-6)
    broken = [(trid, name, w) for trid, name, w in workers if w.error is not None]
    for trid, _name, w in broken[:1]:
        say(f"[{stamp()}] nvme_qpair.c: 956:spdk_nvme_qpair_process_completions: *ERROR*: [,{trid['subnqn']},"
            f"{trid['traddr']},cntlid:1,qid:{w.qid},DISCONNECTED] CQ transport error -6 (No such device or address)",
            err=True)
        say("NVMe io qpair process completion error", err=True)
        say("Write completed with error (sct=0, sc=8)")
    for trid, _, _ in attached:
        sh("nvme", "disconnect", "-n", trid["subnqn"])
    if broken and broken[0][0]["trtype"] == "RDMA" and os.path.exists(ASSERT_KNOB):
        return QPAIR_WITHOUT_POLL_GROUP
    say("=" * 56)
    say(f"{'':>113}Latency(us)")
    say(f"{'Device Information':<77}:{'IOPS':>11}{'MiB/s':>11}{'Average':>11}{'min':>11}{'max':>11}")
    for _, name, _ in attached:
        iops = sum(w.ios for _, n, w in workers if n == name) / elapsed
        say(f"{name + ' NSID 1 from core  0':<77}:{iops:11.2f}{iops * size / 2**20:11.2f}")
    say("=" * 56)
    if broken:
        say(f"{prog}: errors occurred", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
