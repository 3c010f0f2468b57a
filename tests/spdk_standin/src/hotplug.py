#!/usr/bin/python3
"""Stand-in for SPDK's examples/nvme/hotplug (see ../README.md): same arguments, same lines."""

import getopt
import json
import os
import sys
import time

NVME_CLASS = "0x010802"
USER_DRIVERS = ("uio_pci_generic", "vfio-pci")


def err(msg):
    print(msg, file=sys.stderr, flush=True)


def usage(prog):
    print(f"{prog} options\n\t[-c timeout for each command in second(default:1s)]\n\t[-i shm id (optional)]\n"
          "\t[-n expected hot insert times]\n\t[-r expected hot removal times]\n\t[-t time in seconds]\n"
          "\t[-m iova mode: pa or va (optional)\n\t[-l log level]")


def user_space_controllers():
    found = {}
    for bdf in os.listdir("/sys/bus/pci/devices"):
        dev = f"/sys/bus/pci/devices/{bdf}"
        try:
            cls = open(f"{dev}/class").read().strip()
            driver = os.path.basename(os.readlink(f"{dev}/driver"))
        except OSError:
            continue
        if cls == NVME_CLASS and driver in USER_DRIVERS:
            found[bdf] = name_of(bdf)
    return found


def name_of(bdf):
    try:
        ident = json.load(open(f"/run/tbctl/nvme/{bdf}.json"))
    except (OSError, ValueError):
        ident = {"model": "unknown", "serial": bdf}
    return f"{ident['model'][:20]:<20} ({ident['serial'][:20]:<20})"


def main():
    try:
        opts, _ = getopt.getopt(sys.argv[1:], "c:i:l:m:n:r:t:")
    except getopt.GetoptError:
        usage(sys.argv[0])
        return 1
    o = dict(opts)
    for key in ("-c", "-i", "-n", "-r", "-t"):
        if key in o and (not o[key].lstrip("-").isdigit() or int(o[key]) < 0):
            err("Converting a string to integer failed")
            return 1
    seconds, inserts_expected, removals_expected = int(o.get("-t", 0)), int(o.get("-n", -1)), int(o.get("-r", -1))
    if not seconds:
        usage(sys.argv[0])
        return 1
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    if int(meminfo["HugePages_Free"].split()[0]) < 1:
        err("Unable to initialize SPDK env")
        return 1
    err("Initializing NVMe Controllers")
    attached = {}
    for bdf, name in sorted(user_space_controllers().items()):
        err(f"Attaching to {bdf}")
        err(f"Attached to {bdf}")
        attached[bdf] = name
    err("Initialization complete. Starting I/O...")
    inserts = removals = 0
    end = time.monotonic() + seconds
    next_stats = time.monotonic()
    while time.monotonic() < end and (inserts, removals) != (inserts_expected, removals_expected):
        now = user_space_controllers()
        for bdf in sorted(set(attached) - set(now)):
            err(f"Controller removed: {attached[bdf]}")
            removals += 1
            err(f"unregister_dev: {attached.pop(bdf)}")
        for bdf in sorted(set(now) - set(attached)):
            err(f"Attaching to {bdf}")
            err(f"Attached to {bdf}")
            attached[bdf] = now[bdf]
            inserts += 1
        if time.monotonic() > next_stats:
            for name in attached.values():
                err(f"{name:<43.43}: {0:10} I/Os completed (+0)")
            err("")
            next_stats += 1
        time.sleep(0.01)
    for name in attached.values():
        err(f"unregister_dev: {name}")
    if inserts_expected != -1 and inserts != inserts_expected:
        err(f"Expected inserts {inserts_expected} != actual inserts {inserts}")
        return 1
    if removals_expected != -1 and removals != removals_expected:
        err(f"Expected removals {removals_expected} != actual removals {removals}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
