#!/usr/bin/python3
"""Stand-in for SPDK's app/nvmf_tgt (see ../README.md): SPDK's JSON-RPC on a unix socket for the
calls test/nvmf's scripts make, served by the guest kernel's NVMe-oF target (nvmet, configfs)."""

import getopt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

NVMET = "/sys/kernel/config/nvmet"
MALLOC_DIR = "/dev/shm/spdk-standin"
STATE_DIR = "/run/spdk-standin"
METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = -32601, -32602, -32603


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def log(msg):
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
    print(f"[{stamp}] {msg}", flush=True)


class Target:
    """What the RPCs made, kept in a state file so the guardian can undo it if the app is killed."""

    def __init__(self, state_file):
        self.state_file = state_file
        self.transports, self.bdevs, self.subsystems, self.ports = [], {}, {}, {}
        self.made = []  # configfs directories and links, and malloc files, in the order made

    def save(self):
        with open(self.state_file + ".tmp", "w") as f:
            json.dump(self.made, f)
        os.replace(self.state_file + ".tmp", self.state_file)

    def make(self, kind, path):
        if kind == "dir":
            os.mkdir(path)
        self.made.append([kind, path])
        self.save()

    def write(self, path, value):
        with open(path, "w") as f:
            f.write(str(value))

    def spdk_get_version(self):
        return {"version": "SPDK v26.05 stand-in", "fields": {"major": 26, "minor": 5, "patch": 0, "suffix": ""}}

    def framework_wait_init(self):
        return True

    def nvmf_create_transport(self, trtype, **opts):
        tr = trtype.upper()
        if tr not in ("TCP", "RDMA"):
            raise RpcError(INVALID_PARAMS, f"Transport type '{trtype}' unavailable.")
        if tr in self.transports:
            raise RpcError(INTERNAL, f"Transport type '{tr}' already exists")
        subprocess.run(["modprobe", f"nvmet-{tr.lower()}"], check=True)
        self.transports.append(tr)
        log(f"{tr.lower()}.c: *NOTICE*: *** {tr} Transport Init ***")
        return True

    def bdev_malloc_create(self, num_blocks, block_size, name=None, **_):
        name = name or f"Malloc{len(self.bdevs)}"
        if name in self.bdevs:
            raise RpcError(-17, "File exists")
        os.makedirs(MALLOC_DIR, exist_ok=True)
        path = f"{MALLOC_DIR}/{name}"
        with open(path, "wb") as f:
            f.truncate(num_blocks * block_size)
        self.make("file", path)
        self.bdevs[name] = {"name": name, "product_name": "Malloc disk", "block_size": block_size,
                            "num_blocks": num_blocks, "path": path}
        return name

    def bdev_get_bdevs(self, name=None, **_):
        found = [{k: v for k, v in b.items() if k != "path"} for b in self.bdevs.values()
                 if name is None or b["name"] == name]
        if name is not None and not found:
            raise RpcError(-19, "No such device")
        return found

    def nvmf_create_subsystem(self, nqn, allow_any_host=False, serial_number="00000000000000000000", **_):
        if nqn in self.subsystems:
            raise RpcError(INVALID_PARAMS, f"Unable to create subsystem {nqn}")
        path = f"{NVMET}/subsystems/{nqn}"
        self.make("dir", path)
        self.write(f"{path}/attr_allow_any_host", int(bool(allow_any_host)))
        self.write(f"{path}/attr_serial", serial_number)
        self.subsystems[nqn] = {"nqn": nqn, "serial_number": serial_number, "namespaces": [], "listen_addresses": []}
        return True

    def nvmf_subsystem_add_ns(self, nqn, namespace):
        sub = self._subsystem(nqn)
        bdev = self.bdevs.get(namespace.get("bdev_name"))
        if bdev is None:
            raise RpcError(INVALID_PARAMS, "Invalid parameters")
        nsid = namespace.get("nsid") or len(sub["namespaces"]) + 1
        path = f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}"
        self.make("dir", path)
        self.write(f"{path}/device_path", bdev["path"])
        self.write(f"{path}/buffered_io", 1)  # the malloc file is on tmpfs: no O_DIRECT
        self.write(f"{path}/enable", 1)
        sub["namespaces"].append({"nsid": nsid, "bdev_name": bdev["name"]})
        return nsid

    def nvmf_subsystem_add_listener(self, nqn, listen_address, **_):
        sub = self._subsystem(nqn)
        tr = listen_address["trtype"].upper()
        if tr not in self.transports:
            raise RpcError(INVALID_PARAMS, f"Unable to find {tr} transport. The transport must be created first "
                                           "also make sure it is properly registered.")
        key = (tr, listen_address["traddr"], str(listen_address["trsvcid"]))
        if key not in self.ports:
            port = f"{NVMET}/ports/{len(self.ports) + 1}"
            self.make("dir", port)
            for attr, value in (("addr_trtype", tr.lower()), ("addr_adrfam", "ipv4"), ("addr_traddr", key[1]),
                                ("addr_trsvcid", key[2])):
                self.write(f"{port}/{attr}", value)
            self.ports[key] = port
        link = f"{self.ports[key]}/subsystems/{nqn}"
        if not os.path.islink(link):
            os.symlink(f"{NVMET}/subsystems/{nqn}", link)
            self.make("link", link)
        sub["listen_addresses"].append({"trtype": tr, "adrfam": "IPv4", "traddr": key[1], "trsvcid": key[2]})
        log(f"{tr.lower()}.c: *NOTICE*: *** NVMe/{tr} Target Listening on {key[1]} port {key[2]} ***")
        return True

    def nvmf_get_stats(self, **_):
        transports = [{"trtype": tr, "devices": [{"name": d} for d in rdma_devices()] if tr == "RDMA" else []}
                      for tr in self.transports]
        return {"tick_rate": 1000000000, "poll_groups": [{"name": "nvmf_tgt_poll_group_000", "transports": transports}]}

    def relisten(self):
        """A new RDMA device (a NIC back): listen on it again, as SPDK's RDMA transport rescans its
        devices and re-creates its listeners (nvmet's own RDMA port stays dead until re-linked)."""
        for (tr, _, _), port in self.ports.items():
            if tr != "RDMA":
                continue
            for nqn in os.listdir(f"{port}/subsystems"):
                os.unlink(f"{port}/subsystems/{nqn}")
                os.symlink(f"{NVMET}/subsystems/{nqn}", f"{port}/subsystems/{nqn}")
                log(f"rdma.c: *NOTICE*: Port {port.rsplit('/', 1)[1]} listening again for {nqn}")

    def nvmf_get_subsystems(self, **_):
        return list(self.subsystems.values())

    def _subsystem(self, nqn):
        if nqn not in self.subsystems:
            raise RpcError(INVALID_PARAMS, f"Unable to find subsystem with NQN {nqn}")
        return self.subsystems[nqn]

    def methods(self):
        return sorted(n for n in dir(self) if n[0] != "_" and n.split("_")[0] in ("spdk", "framework", "nvmf", "bdev"))

    def call(self, method, params):
        if method == "rpc_get_methods":
            return self.methods()
        if method not in self.methods():
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        try:
            return getattr(self, method)(**(params or {}))
        except (TypeError, KeyError) as e:
            raise RpcError(INVALID_PARAMS, f"Invalid parameters: {e}") from None
        except OSError as e:
            raise RpcError(-e.errno if e.errno else INTERNAL, os.strerror(e.errno) if e.errno else str(e)) from None


def rdma_devices():
    try:
        return sorted(os.listdir("/sys/class/infiniband"))
    except OSError:
        return []


def rescan(target):
    """Every second, the RDMA devices there are; a new one makes the target listen on it."""
    seen = set(rdma_devices())
    while True:
        time.sleep(1)
        now = set(rdma_devices())
        if now - seen and "RDMA" in target.transports:
            target.relisten()
        seen = now


def undo(made):
    """Take down what was made, newest first (configfs wants namespaces disabled, links gone first)."""
    for kind, path in reversed(made):
        try:
            if kind == "link" or kind == "file":
                os.unlink(path)
            else:
                if "/namespaces/" in path:
                    with open(f"{path}/enable", "w") as f:
                        f.write("0")
                os.rmdir(path)
        except OSError as e:
            print(f"nvmf_tgt stand-in: cannot remove {path}: {e}", file=sys.stderr, flush=True)


def guardian(state_file):
    """A process outside the app's tree that undoes its configuration once the app is gone, however
    it went (SIGKILL included): a dead SPDK target's connections close with it."""
    r, w = os.pipe()
    if pid := os.fork():
        os.close(r)
        os.waitpid(pid, 0)
        return w
    os.close(w)
    if os.fork():
        os._exit(0)
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while os.read(r, 1):
        pass
    try:
        with open(state_file) as f:
            undo(json.load(f))
        os.unlink(state_file)
    except (OSError, ValueError):
        pass  # the app took its configuration down itself
    os._exit(0)


def serve(sock_path, target):
    os.makedirs(os.path.dirname(sock_path) or ".", exist_ok=True)
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(8)
    log("app.c: *NOTICE*: Total cores available: 1")
    log("reactor.c: *NOTICE*: Reactor started on core 0")
    decoder = json.JSONDecoder()
    while True:
        conn, _ = listener.accept()
        buf = ""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data.decode()
                while buf.strip():
                    try:
                        req, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break  # not whole yet
                    buf = buf.lstrip()[end:]
                    answer = {"jsonrpc": "2.0", "id": req.get("id")}
                    try:
                        answer["result"] = target.call(req.get("method"), req.get("params"))
                    except RpcError as e:
                        answer["error"] = {"code": e.code, "message": str(e)}
                    conn.sendall(json.dumps(answer).encode())


def main():
    try:
        opts, _ = getopt.getopt(sys.argv[1:], "m:r:i:s:e:c:")
    except getopt.GetoptError as e:
        print(f"{sys.argv[0]}: {e}", file=sys.stderr)
        return 1
    sock = dict(opts).get("-r", "/var/tmp/spdk.sock")
    log("Starting SPDK v26.05 stand-in / kernel nvmet initialization...")
    subprocess.run(["modprobe", "nvmet"], check=True)
    if not os.path.isdir(NVMET):
        subprocess.run(["mount", "-t", "configfs", "none", "/sys/kernel/config"], check=True)
    os.makedirs(STATE_DIR, exist_ok=True)
    target = Target(f"{STATE_DIR}/nvmf_tgt.{os.getpid()}.json")
    target.save()
    guardian(target.state_file)  # its pipe's write end stays open in this process until it dies

    def stop(signum, _frame):
        log("app.c: *NOTICE*: Shutdown signal received, stop current app iteration")
        undo(target.made)
        os.unlink(target.state_file)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=rescan, args=(target,), daemon=True).start()
    serve(sock, target)


if __name__ == "__main__":
    sys.exit(main())
