"""Start-up failures of SPDK apps, as the loader, DPDK's EAL and SPDK print them, in one line."""

from __future__ import annotations

import pytest

from orchestrator.guest.ssh import Result
from orchestrator.report.spdk_start import diagnose
from orchestrator.spdk import AppDidNotStart, DoorbellAers

CASES = [
    # (what the app printed, exit status, the cause the diagnosis must name)
    ("/mnt/spdk/build/examples/hotplug: error while loading shared libraries: libfuse3.so.3: cannot open shared "
     "object file: No such file or directory\n", 127, "the guest has no libfuse3.so.3"),
    ("/mnt/spdk/build/examples/hotplug: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required "
     "by /mnt/spdk/build/examples/hotplug)\n", 1, "lack GLIBC_2.38 (required by /mnt/spdk/build/examples/hotplug)"),
    ("[2026-12-01 22:31:27.1] pci_dpdk.c: 63:dpdk_pci_init: *ERROR*: DPDK version 22.11.11 is not supported.\n"
     "[2026-12-01 22:31:27.1] init.c: 826:spdk_env_init: *ERROR*: Unable to initialize SPDK env\n", 1,
     "this SPDK release refuses DPDK 22.11.11"),
    ("Failed to initialize OpenSSL\n40F7C1B3:error:12800067:DSO support routines:dlfcn_load:could not load the "
     "shared library:crypto/dso/dso_dlfcn.c:118:filename(/usr/lib/ssl/openssl.cnf)\n"
     "[2026-12-01] init.c: 826:spdk_env_init: *ERROR*: Unable to initialize SPDK env\n", 1,
     "no readable OpenSSL config in the guest"),
    ("EAL: No free 2048 kB hugepages reported on node 0\nEAL: FATAL: Cannot get hugepage information.\n"
     "EAL: Cannot get hugepage information.\nFailed to initialize DPDK\n", 1, "the guest has no free hugepages"),
    ("[2026-12-01 22:42:52.442629] iobuf.c: 155:iobuf_node_initialize: *ERROR*: Unable to allocate requested "
     "large iobuf pool size\n[2026-12-01 22:42:52.818340] iobuf.c:  19:iobuf_subsystem_initialize: *ERROR*: "
     "Failed to initialize iobuf\n", 1, "not enough free hugepage memory"),
    # v24.09's nvmf_tgt with 16 hugepages: the reactor's event pool is the first one short
    ("[2026-12-05 03:12:58.858822] app.c: 917:spdk_app_start: *NOTICE*: Total cores available: 1\n"
     "[2026-12-05 03:12:59.212367] reactor.c: 285:spdk_reactors_init: *ERROR*: spdk_event_mempool creation failed\n"
     "[2026-12-05 03:12:59.216518] app.c: 920:spdk_app_start: *ERROR*: Reactor Initialization failed: rc = -1\n",
     1, "not enough free hugepage memory"),
    ('ERROR: This system does not support "AVX512F".\nPlease check that RTE_MACHINE is set correctly.\n'
     "EAL: FATAL: unsupported cpu type.\n", 1, "the guest CPU lacks AVX512F"),
    ("sh: 1: /mnt/spdk/build/examples/hotplug: Illegal instruction\n", 132, "an instruction the guest CPU lacks"),
    ("", 127, "the app or a library it needs was not found (exit 127)"),
]


@pytest.mark.parametrize("output,status,cause", CASES, ids=[c[2][:30] for c in CASES])
def test_start_failures_are_named_with_the_apps_own_words(output: str, status: int, cause: str) -> None:
    d = diagnose(output, status)
    assert d is not None and cause in d.cause
    text = str(d)
    assert text.startswith("SPDK app did not start: ") and "\n" not in text
    if output:  # the app's own line, whole, is in the message
        assert d.line in [ln.strip() for ln in output.splitlines()] and f'(it said: "{d.line}")' in text


def test_a_run_that_worked_is_no_start_failure() -> None:
    assert diagnose("Initializing NVMe Controllers\nAttached to 0000:01:00.0\n", 0) is None
    assert diagnose("some unrelated failure\n", 1) is None


def test_doorbell_aers_that_never_started_says_why_first() -> None:
    out = "/mnt/spdk/test/nvme/doorbell_aers/doorbell_aers: error while loading shared libraries: " \
          "libspdk_env_standin.so.1: cannot open shared object file: No such file or directory\n"
    run = DoorbellAers(result=Result("doorbell_aers", 127, out, "", 0.1))
    with pytest.raises(AppDidNotStart, match=r"^SPDK doorbell_aers: SPDK app did not start: the guest has no "
                                             r"libspdk_env_standin\.so\.1 \(it said: "):
        run.check(10, "")
