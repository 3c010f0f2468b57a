"""SPDK's own test scripts as a run kind, `tbctl run spdk:PATH`, on the stand-in tree's script
shaped like SPDK's (tests/spdk_standin/test/standin/steps.sh, sourcing the stand-in's
test/common/autotest_common.sh); tests/test_spdk_real.py runs a real tree's."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import STANDIN, Tbctl, tbctl

from orchestrator.engine import substeps

SCRIPT = "test/standin/steps.sh --transport=tcp"  # with an argument, as SPDK's autotest passes them


def test_an_unfinished_step_takes_its_scripts_outcome() -> None:
    cut = substeps.Step("spdk:x.sh::a", substeps.UNFINISHED, 1.0)
    assert [substeps.outcome_of(cut, o) for o in ("timed out", "guest crashed", "passed", "known failure")] == [
        "timed out", "guest crashed", "failed", "failed"]
    assert substeps.outcome_of(substeps.Step("spdk:x.sh::b", "passed", 1.0), "timed out") == "passed"


def test_a_scripts_core_masks_give_its_machine_cpus(tmp_path: Path) -> None:
    """The vCPUs a script needs, from the core masks it passes SPDK's apps (lines of SPDK's own
    scripts); a mask beyond what a machine can have is one line before any boot."""
    from orchestrator.errors import ConfigError
    from orchestrator.spdk import script

    cases = {'start_stub "-s 4096 -i 0 -m 0xE"\n': 4, "\tnvmfappstart -m 0x1E\n": 5,
             "bdev_svc -m 0x1 -i 1 -r /var/tmp/bdevperf.sock &\n": 1, "spdk_tgt --cpumask=0x3\n": 2,
             "$SPDK_BIN_DIR/spdk_tgt -m '0xF0' &\n": 8,
             "nvme connect -t tcp -s 4420 -m 0\nmkfs.ext4 -m 0 /dev/x\nfio --iodepth-m 0x3\n": 1}
    for text, n in cases.items():
        (tmp_path / "t.sh").write_text(text)
        assert script.cpus(tmp_path / "t.sh") == n, text
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "big.sh").write_text("nvmfappstart -m 0x1FFFF\n")
    with pytest.raises(ConfigError, match=r"^spdk:test/big.sh: its core masks \(-m\) name CPU 16; a machine has "
                                          r"at most 16 vCPUs$"):
        script.parse_target("spdk:test/big.sh", tmp_path)


def test_scripts_alone_run_on_the_topology_shaped_like_spdks_ci_vms(tmp_path: Path, standin: Path) -> None:
    """A run of SPDK scripts alone that names no topology gets spdk-ci's (the disks, ZNS,
    metadata and vIOMMU SPDK's scripts look for); a topology named, or suites beside the
    scripts, keep theirs."""
    from orchestrator.cli.runs import with_scripts
    from orchestrator.config import topology
    from orchestrator.config.runspec import RunSpec

    spec = RunSpec(spdk_dir=standin)
    target = f"spdk:{SCRIPT}"
    assert with_scripts(spec, [target]).topology == Path(topology.ref("spdk-ci"))
    assert with_scripts(spec, [target, "sw_hotplug"]).topology is None
    mine = tmp_path / "mine.toml"
    assert with_scripts(dataclasses.replace(spec, topology=mine), [target]).topology == mine


def test_a_scripts_apps_memory_gives_its_machine_hugepages(tmp_path: Path) -> None:
    """The hugepages a script wants, from the `-s` its apps are started with (lines of SPDK's own
    scripts): only on a command that passes a core mask, since elsewhere `-s` is a port or a size;
    setup.sh's default where no app asks more; the machine holds them twice over."""
    from orchestrator.config import topology
    from orchestrator.spdk import script

    cases = {'start_stub "-s 4096 -i 0 -m 0xE"\n': 5120,
             "$SPDK_BIN_DIR/spdk_tgt -m 0x4 -p 0 -g -u -s 1024 -r /var/tmp/virtio.sock &\n": 2048,
             "bdevperf -m 0x10 -i 1 \\\n\t-q 128 --mem-size=3072 &\n": 4096,
             "nvme discover -t tcp -a 10.0.0.2 -s 8009 -o json\nnvme create-ns nvme0 -s 10000 -c 10000 -f 0\n"
             "truncate -s 8192M aio0\nrpc_cmd bdev_opal_create -b nvme0 -n 1 -i 3 -s 4096 -l 4096 -p test\n": 2048}
    for text, mib in cases.items():
        (tmp_path / "t.sh").write_text(text)
        assert script.hugemem_wanted(tmp_path / "t.sh") == mib, text
    (tmp_path / "t.sh").write_text(next(iter(cases)))
    assert script.memory_mib(tmp_path / "t.sh") == 10240
    topo = topology.parse({"machine": {"memory_mib": 10240}, "nvme": [{"id": "nvme0", "serial": "S"}]}, "t")
    assert script.hugemem(topo, 5120) == 5120 and script.hugemem(dataclasses.replace(topo, memory_mib=4096), 5120) == 2048


@pytest.mark.vm
def test_a_script_runs_unchanged_and_its_steps_are_results(tmp_path: Path, standin: Path) -> None:
    known = tmp_path / "known.toml"  # a step's failure can be a known one, named as the summary names it
    known.write_text(f'[[known]]\ntest = "spdk:{SCRIPT}::standin_nested.standin_missing"\n'
                     'signature = "failed: standin_nested.standin_missing failed: cat: *"\nreason = "no nvme9 here"\n')
    r = tbctl(tmp_path, "run", f"spdk:{SCRIPT}", "--spdk-dir", str(standin), "--json", str(tmp_path / "r.json"),
              "--junit", str(tmp_path / "j.xml"), "--expunge", str(known), "--spdk-env", "NET_TYPE=virt",
              "--fault", 'remove nvme1 after "START TEST standin_output"', "--fault", "rescan after NEVER-PRINTED",
              "--jitter", "0")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    by = {t["nodeid"]: t for t in doc["tests"]}
    script = by[f"suites/_spdk_scripts.py::test_script[{SCRIPT}]"]
    steps = {n.split("::", 1)[1]: t for n, t in by.items() if n.startswith(f"spdk:{SCRIPT}::")}
    assert {k: v["outcome"] for k, v in steps.items()} == {
        "standin_output": "passed", "standin_tree": "passed", "standin_cores": "passed", "standin_nested": "failed",
        "standin_nested.standin_present": "passed", "standin_nested.standin_missing": "known failure"}, r.stdout[-3000:]
    assert steps["standin_nested.standin_missing"]["known"]["reason"] == "no nvme9 here"
    missing = steps["standin_nested.standin_missing"]["message"]
    assert missing.startswith("standin_nested.standin_missing failed: cat: /sys/class/nvme/nvme9/serial: "
                              "No such file or directory\n========== Backtrace start: ==========")
    assert "in test/standin/steps.sh:27 -> missing_controller([])" in missing
    assert steps["standin_nested"]["message"].startswith("standin_nested failed: step standin_nested.standin_missing")
    assert script["outcome"] == "failed" and script["message"].startswith(
        f"ScriptFailed: {SCRIPT} exited 1; failed: standin_nested, standin_nested.standin_missing\n"
        "cat: /sys/class/nvme/nvme9/serial: No such file or directory"), script["message"]
    # a marker fault: fired on the script's machine once the script printed its marker, and its
    # delay, seen by QEMU, on the test's schedule and timeline beside the step it hit; the one
    # whose marker never came is said
    assert script["message"].endswith("fault 'rescan after NEVER-PRINTED' never fired: no line of the output "
                                      "contained 'NEVER-PRINTED'"), script["message"]
    assert [what for what, _ in script["schedule"]] == ["remove nvme1"]
    events = script["events"]
    (fault,) = [e for e in events if e["kind"] == "fault"]
    step = {e["what"]: e for e in events if e["kind"] == "step"}
    assert fault["what"] == "remove nvme1" and step["standin_output"]["at"] <= fault["at"] < step["standin_nested"]["end"]
    assert any(e["kind"] == "qemu" and "DEVICE_DELETED" in e["what"] and "nvme1" in e["what"] for e in events), events
    # what the script wrote to its output_dir, and everything it printed, are the test's artifacts
    art = Path(script["artifacts"])
    assert (art / "output" / "test_completions.txt").read_text().splitlines() == [
        "top_level standin_output", "top_level standin_tree", "top_level standin_cores",
        "standin_nested standin_present"]  # standin_cores: the machine got the CPUs of the script's -m 0x6
    assert (art / "output" / "standin.txt").read_text() == f"written by {SCRIPT} NET_TYPE=virt\n"
    log = (art / "script.log").read_text()
    # the tree's scripts/setup.sh ran first, as autotest.sh runs it: the controllers bound, hugepages reserved
    # (vfio-pci: a run of scripts alone is on the spdk-ci topology, which has a vIOMMU)
    assert log.index("(1b36 0010): nvme -> vfio-pci") < log.index("START TEST standin_output"), log[:3000]
    # it wrote inside its tree (standin_tree passed), into the guest's overlay: the user's tree is untouched
    assert not (standin / "test/standin/written-by-the-script").exists()
    # JUnit: one testcase per step, the script as its class, a failure where the step failed
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "j.xml").iter("testcase")
             if c.get("classname", "").startswith("spdk:")}
    assert set(cases) == set(steps)
    assert {c.get("classname") for c in cases.values()} == {"spdk:test.standin.steps.sh --transport=tcp"}
    assert cases["standin_nested"].find("failure") is not None and cases["standin_output"].find("failure") is None
    assert cases["standin_nested.standin_missing"].find("skipped").get("type") == "pytest.xfail"  # type: ignore[union-attr]
    props = {p.get("name"): p.get("value") for p in cases["standin_nested"].iter("property")}
    assert props["outcome"] == "failed"


def test_an_autorun_conf_is_checked_against_what_the_tree_declares(tmp_path: Path, tbctl_main: Tbctl) -> None:
    """Before any boot: a flag the tree does not declare (nothing would read it), a number flag
    given a word, a line that is not an assignment, each one line naming the file and line; the
    conf needs spdk:autorun and spdk:autorun needs a conf."""
    conf = tmp_path / "autorun-spdk.conf"
    cases = {
        "SPDK_RUN_FUNCTIONAL_TEST=1\nSPDK_TEST_STANDN=1\n":
            f"--spdk-conf {conf}:2: SPDK_TEST_STANDN is not a variable the tree's test/common/autotest_common.sh "
            "declares, so nothing reads it (did you mean SPDK_TEST_STANDIN?)",
        "# a comment\n\nSPDK_RUN_ASAN=yes\n":
            f"--spdk-conf {conf}:3: SPDK_RUN_ASAN must be a number (its default is 0), not 'yes'",
        "SPDK_RUN_FUNCTIONAL_TEST=1\nsource ~/more.conf\n":
            f"--spdk-conf {conf}:2: must be NAME=VALUE, as in scripts/vagrant/autorun-spdk.conf, not 'source ~/more.conf'",
        "SPDK_TEST_AUTOBUILD='full\n": f"--spdk-conf {conf}:1: No closing quotation",
    }
    for text, line in cases.items():
        conf.write_text(text)
        r = tbctl_main("run", "spdk:autorun", "--spdk-dir", str(STANDIN), "--spdk-conf", str(conf))
        assert (r.returncode, r.stderr.strip()) == (2, f"tbctl: {line}"), text
    # what SPDK's own confs hold: strings where the default is one, exports, comments, other variables
    conf.write_text('SPDK_TEST_AUTOBUILD="full"\nexport SPDK_RUN_FUNCTIONAL_TEST=1  # on\nHUGEMEM=1024\n')
    from orchestrator.spdk import autorun
    autorun.check_conf(conf, STANDIN)
    r = tbctl_main("run", "spdk:autorun", "--spdk-dir", str(STANDIN))
    assert r.stderr.strip() == ("tbctl: spdk:autorun: runs the tree's autorun.sh with your autorun-spdk.conf: "
                                "--spdk-conf FILE")
    r = tbctl_main("run", f"spdk:{SCRIPT}", "--spdk-dir", str(STANDIN), "--spdk-conf", str(conf))
    assert r.stderr.strip() == (f"tbctl: --spdk-conf {conf}: the conf of the tree's autorun.sh or autotest.sh: "
                                "run spdk:autorun or spdk:autotest with it")
    r = tbctl_main("run", "spdk:autotest", "--spdk-dir", str(STANDIN))
    assert r.stderr.strip() == ("tbctl: spdk:autotest: runs the tree's autotest.sh with your autorun-spdk.conf: "
                                "--spdk-conf FILE")
    r = tbctl_main("run", "spdk:autorun --verbose", "--spdk-dir", str(STANDIN), "--spdk-conf", str(conf))
    assert r.stderr.strip() == ("tbctl: spdk:autorun --verbose: autorun.sh takes no arguments here: its conf is "
                                "--spdk-conf FILE")


def test_the_real_trees_declarations_are_read(tmp_path: Path) -> None:
    """SPDK's forms: `: ${NAME=0}`, `: ${NAME:=0}`, `: ${NAME=""}`, `: ${NAME}` (lines of v24.09's
    autotest_common.sh), each with its default; other variables are not flags."""
    from orchestrator.spdk import autorun
    (tmp_path / "test/common").mkdir(parents=True)
    (tmp_path / "test/common/autotest_common.sh").write_text(
        ': ${RUN_NIGHTLY:=0}\n: ${SPDK_RUN_FUNCTIONAL_TEST=0}\nexport SPDK_RUN_FUNCTIONAL_TEST\n'
        ': ${SPDK_TEST_AUTOBUILD=""}\n: ${SPDK_TEST_NVMF_TRANSPORT="rdma"}\n: ${SPDK_TEST_NATIVE_DPDK}\n'
        ': ${SPDK_TEST_USE_IGB_UIO:=0}\n: ${SPDK_TEST_NVMF_NICS:=}\n\t: ${SPDK_NOT_AT_LINE_START=0}\n')
    assert autorun.declared(tmp_path) == {
        "SPDK_RUN_FUNCTIONAL_TEST": "0", "SPDK_TEST_AUTOBUILD": "", "SPDK_TEST_NVMF_TRANSPORT": "rdma",
        "SPDK_TEST_NATIVE_DPDK": "", "SPDK_TEST_USE_IGB_UIO": "0", "SPDK_TEST_NVMF_NICS": ""}


@pytest.mark.vm
@pytest.mark.parametrize("job", ["autorun", "autotest"])
def test_a_ci_job_runs_the_confs_tests(tmp_path: Path, standin: Path, job: str) -> None:
    """`spdk:autorun`: the tree's autorun.sh with the user's conf, unchanged: its autobuild.sh
    rebuilds the tree in the guest (into the overlay: the user's build stays as it was), then
    autotest.sh, through sudo, runs the tests the conf's flags select. `spdk:autotest`: those
    tests alone, on the user's build. Every run_test is a step, the conf and the output_dir are
    the test's artifacts."""
    conf = tmp_path / "autorun-spdk.conf"
    conf.write_text("SPDK_RUN_FUNCTIONAL_TEST=1\nSPDK_TEST_STANDIN=1\nSPDK_RUN_UBSAN=1\n")
    built = {p: p.stat().st_mtime_ns for p in (standin / "build").rglob("*") if p.is_file()}
    r = tbctl(tmp_path, "run", f"spdk:{job}", "--spdk-dir", str(standin), "--spdk-conf", str(conf),
              "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    by = {t["nodeid"]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    script = by[f"suites/_spdk_scripts.py::test_script[{job}.sh]"]
    steps = {n.split("::", 1)[1]: t["outcome"] for n, t in by.items() if n.startswith(f"spdk:{job}.sh::")}
    build = {"ubsan": "passed", "make": "passed"} if job == "autorun" else {}  # autobuild.sh's steps
    assert steps == {**build, "standin": "failed", "standin.standin_output": "passed",
                     "standin.standin_tree": "passed", "standin.standin_cores": "passed",
                     "standin.standin_nested": "failed", "standin.standin_nested.standin_present": "passed",
                     "standin.standin_nested.standin_missing": "failed"}, r.stdout[-3000:]
    assert script["outcome"] == "failed" and "failed: standin, standin.standin_nested" in script["message"]
    art = Path(script["artifacts"])
    assert (art / "autorun-spdk.conf").read_text() == conf.read_text()
    log = (art / "script.log").read_text()
    # autorun's build ran in the guest: the apps linked again, against the tree where the guest
    # sees it; autotest's tests ran the user's build as it is
    assert (("Test configuration:\nSPDK_RUN_FUNCTIONAL_TEST=1" in log and "-Wl,-rpath,/" in log
             and "-lspdk_env_standin" in log) == (job == "autorun")), log[:3000]
    # autotest's own setup.sh bound the controllers before its tests; its files are in output/
    assert log.index("nvme -> vfio-pci") < log.index("START TEST standin"), log[:3000]
    assert not (art / "output" / "timing.txt").exists()  # autotest stopped at the failed step, before writing it
    assert "standin standin_output" in (art / "output" / "test_completions.txt").read_text()
    assert {p: p.stat().st_mtime_ns for p in (standin / "build").rglob("*") if p.is_file()} == built
