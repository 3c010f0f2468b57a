"""tbctl ci-template: each scheduler's file passes that scheduler's own schema where one is
installable here (GitHub's and GitLab's through check-jsonschema, Kubernetes' through
kubernetes-validate; Jenkins has none outside a Jenkins server), and the shard and merge commands
each file runs are run for real, as the scheduler would, on machine-free demo suites."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEMOS = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests" / "engine_suites" / "shards").glob("*.py"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


def template(kind: str, *args: str) -> str:
    """tbctl ci-template as a user runs it, from the checkout."""
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ci-template", kind, *args],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def schema_errors(kind: str, text: str, tmp_path: Path) -> str:
    """What the scheduler's schema says of `text` ('' when it passes)."""
    if kind == "k8s":
        out = []
        for doc in yaml.safe_load_all(text):
            try:
                kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            except kubernetes_validate.ValidationError as e:
                out.append(str(e))
        return "\n".join(out)
    path = tmp_path / f"{kind}.yml"
    path.write_text(text)
    r = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", SCHEMAS[kind], str(path)],
                       capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else r.stdout + r.stderr


@pytest.mark.parametrize("kind,args,broken", [
    ("k8s", ["--shards", "3"], ("completions: 3", "completions: three")),
    ("k8s", ["--shards", "1", "--kvm", "--expunge", "suites/known_failures.toml"], ("restartPolicy", "restartpolicy")),
    ("github", ["--shards", "4"], ("    steps:", "    stepz:")),
    ("gitlab", ["--shards", "2", "--suite", "sw_hotplug", "--suite", "dm_mount"], ("when: always", "when: sometimes")),
])
def test_the_schedulers_schemas_accept_the_files_and_would_refuse_a_broken_one(
        tmp_path: Path, kind: str, args: list[str], broken: tuple[str, str]) -> None:
    text = template(kind, *args)
    assert schema_errors(kind, text, tmp_path) == ""
    assert broken[0] in text
    assert schema_errors(kind, text.replace(broken[0], broken[1]), tmp_path) != ""  # the check can fail


def test_the_kubernetes_job_asks_for_kvm_only_when_told() -> None:
    plain, kvm = (list(yaml.safe_load_all(template("k8s", "--shards", "2", *a))) for a in ([], ["--kvm"]))
    assert (plain[0]["spec"]["completionMode"], plain[0]["spec"]["completions"]) == ("Indexed", 2)
    assert "resources" not in plain[0]["spec"]["template"]["spec"]["containers"][0]
    assert kvm[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"devices.kubevirt.io/kvm": "1"}
    assert plain[1]["spec"]["suspend"] is True  # the merge waits to be resumed after the shards


def jobs(kind: str, text: str) -> tuple[list[tuple[str, dict[str, str]]], str]:
    """The shard jobs' commands (each with the variables its scheduler gives it) and the merge's,
    read from the file the way the scheduler reads it."""
    if kind == "gitlab":
        doc = yaml.safe_load(text)
        n = doc["tbctl"]["parallel"]
        (cmd,) = doc["tbctl"]["script"]
        return ([(cmd, {"CI_NODE_INDEX": str(k), "CI_NODE_TOTAL": str(n), "CI_PIPELINE_ID": "4711"})
                 for k in range(1, n + 1)], doc["merge"]["script"][0])
    if kind == "github":
        doc = yaml.safe_load(text)
        shard = doc["jobs"]["shard"]
        (cmd,) = [s["run"] for s in shard["steps"] if "run" in s]
        (merge,) = [s["run"] for s in doc["jobs"]["merge"]["steps"] if "run" in s]
        return ([(cmd.replace("${{ matrix.shard }}", str(k)), {"GITHUB_RUN_ID": "4711"})
                 for k in shard["strategy"]["matrix"]["shard"]], merge)
    if kind == "jenkins":
        *cmds, merge = re.findall(r"sh '''(.*?)'''", text)
        return [(c, {"BUILD_TAG": "jenkins-tbctl-4711"}) for c in cmds], merge
    shards, merge_job = yaml.safe_load_all(text)
    (c,) = shards["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert c["command"][:2] == ["sh", "-c"]
    return ([(c["command"][2], {**env, "JOB_COMPLETION_INDEX": str(k)}) for k in range(shards["spec"]["completions"])],
            merge_job["spec"]["template"]["spec"]["containers"][0]["command"][2])


@pytest.mark.parametrize("kind", ["gitlab", "github", "jenkins", "k8s"])
def test_the_shard_and_merge_commands_run_for_real(tmp_path: Path, kind: str) -> None:
    results = tmp_path / "results"
    shard_cmds, merge = jobs(kind, template(kind, "--shards", "2", *(a for d in DEMOS for a in ("--suite", d)),
                                    "--results", str(results)))
    assert len(shard_cmds) == 2
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for cmd, variables in shard_cmds:
        r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=REPO, env={**env, **variables},
                           timeout=600)
        assert r.returncode in (0, 1), f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    shards = [json.loads(p.read_text()) for p in sorted(results.glob("shard-*.json"))]
    assert sorted(s["shard"]["index"] for s in shards) == [1, 2] and {s["shard"]["total"] for s in shards} == {2}
    assert len({s["shard"]["run"] for s in shards}) == 1  # the scheduler's run id ties them together
    r = subprocess.run(["sh", "-c", merge], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    merged = json.loads((results / "merged.json").read_text())
    assert (r.returncode, merged["problems"]) == (1, []), r.stdout[-2000:] + r.stderr[-2000:]  # demo's test_fails
    assert sorted(t["nodeid"] for t in merged["tests"]) == sorted(n for s in shards for n in s["shard"]["tests"])
    assert len(merged["tests"]) == shards[0]["shard"]["of"]  # every test of the whole run, once
    assert (results / "merged.xml").is_file() and list(results.glob("artifacts-*"))


@pytest.mark.parametrize("args,line", [
    (["k8s", "--shards", "0"], "tbctl ci-template: argument --shards: 0: must be at least 1 and at most 256 "
                               "(see tbctl ci-template --help)"),
    (["gitlab", "--shards", "2", "--suite", "nosuch"], "tbctl: suite 'nosuch': no suites/nosuch.py and no such file; "
                                                        "known suites: {suites}"),
    (["k8s", "--shards", "2", "--claim", "Work_Space"],
     "tbctl: --claim 'Work_Space': a Kubernetes name: lower-case letters, digits and '-'"),
    (["jenkins", "--shards", "2", "--expunge", "nosuch.toml"], "tbctl: --expunge nosuch.toml: no such file"),
])
def test_bad_template_input_is_one_line(args: list[str], line: str) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ci-template", *args],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    suites = ", ".join(sorted(p.stem for p in (REPO / "suites").glob("[!_]*.py") if p.stem != "conftest"))
    assert (r.returncode, r.stderr.strip(), r.stdout) == (2, line.format(suites=suites), "")
