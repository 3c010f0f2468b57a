"""tbctl ci-template: each scheduler's file passes that scheduler's own schema where one is
installable here (GitHub's and GitLab's through check-jsonschema, Kubernetes' through
kubernetes-validate; Jenkins has none outside a Jenkins server), and the shard and merge commands
each file runs are run for real, as the scheduler would, on machine-free demo suites."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_bisect import fake_runs, history

from orchestrator import image
from orchestrator.cli import bisect as cli_bisect
from orchestrator.cli.app import main
from orchestrator.config.runspec import RunSpec
from orchestrator.results import bisect

REPO = Path(__file__).resolve().parent.parent
DEMOS = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests" / "engine_suites" / "shards").glob("*.py"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
BISECT = "nvmf_shutdown --repo /srv/spdk --broken v24.09 --fixed v25.01-rc1 --runs 20"
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
    ("gitlab", ["--shards", "3", "--bisect", BISECT], ("parallel: 3", "parallel: three")),
    ("github", ["--shards", "2", "--rounds", "4", "--bisect", BISECT], ("    needs: merge-3", "    needz: merge-3")),
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
    (["k8s", "--shards", "2", "--bisect", "sw_hotplug --repo r --good a --bad b"],
     "tbctl: --bisect: k8s has no pipeline of rounds: gitlab, github, jenkins do"),
    (["gitlab", "--shards", "2", "--bisect", "sw_hotplug --repo r --good a --bad b --shard=1/2"],
     "tbctl: --bisect: --shard=1/2: the pipeline sets it, job by job"),
    (["github", "--shards", "2", "--bisect", "--repo r sw_hotplug"],
     "tbctl: --bisect: the test comes first: 'SUITE::TEST --repo DIR --good REF --bad REF ...'"),
    (["jenkins", "--shards", "2", "--bisect", "nosuch::test_x --repo r"],
     "tbctl: suite 'nosuch': no suites/nosuch.py and no such file; known suites: {suites}"),
])
def test_bad_template_input_is_one_line(args: list[str], line: str) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ci-template", *args],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    suites = ", ".join(sorted(p.stem for p in (REPO / "suites").glob("[!_]*.py") if p.stem != "conftest"))
    assert (r.returncode, r.stderr.strip(), r.stdout) == (2, line.format(suites=suites), "")


def test_a_bisect_pipeline_runs_round_by_round_as_gitlab_runs_it(
        tmp_path: Path, guest_image: image.Image, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The GitLab pipeline of `--bisect`, its jobs run in stage order as GitLab runs them: each in
    a checkout of its own holding only the artifacts of the jobs it needs (the paths and
    exclusions the file declares), its script's tbctl command run for real (in this process),
    but for the test's runs: a stand-in history's, on the tree the job built (tests/test_bisect)."""
    shas = history(tmp_path / "spdk", first_flaky=6, broken=5)
    text = template("gitlab", "--shards", "2", "--rounds", "9", "--bisect",
                    f"sw_hotplug --repo {tmp_path / 'spdk'} --good {shas[0]} --bad {shas[-1]} --runs 2 "
                    "--build 'sh build.sh'")
    doc = yaml.safe_load(text)
    assert doc["stages"][:3] == ["plan", "round-1", "merge-1"] and len(doc["stages"]) == 19

    def machine(args: object, settings: object, out: Path, base: object = None) -> tuple[Path, image.Image]:
        return RunSpec().dump(out / "spec.json"), guest_image  # the test's; what resolves them is tested elsewhere
    monkeypatch.setattr(cli_bisect, "machine", machine)
    monkeypatch.setattr(bisect, "run_batch", lambda s, spec, n, seed, where: fake_runs(where.parents[3], 1.0)(
        s, spec, n, seed, where))
    artifacts: dict[str, list[Path]] = {}
    said: list[str] = []
    for stage in doc["stages"]:
        (name,) = [n for n, job in doc.items() if isinstance(job, dict) and job.get("stage") == stage]
        job = doc[name]
        for k in range(1, job.get("parallel", 1) + 1):
            checkout = tmp_path / "jobs" / f"{name}-{k}"
            checkout.mkdir(parents=True)
            for need in job.get("needs", []):
                for art in artifacts[need["job"]]:
                    shutil.copytree(art, checkout, dirs_exist_ok=True)
            (cmd,) = job["script"]
            argv = shlex.split(cmd.replace("$CI_NODE_INDEX", str(k)))
            assert argv[:2] == ["scripts/dev", "tbctl"], cmd
            monkeypatch.chdir(checkout)
            rc = main(argv[2:])
            out, err = capsys.readouterr()
            said.append(out + err)
            assert rc == 0, f"{name} {k}: {cmd}: {err[-3000:]}"
            kept = tmp_path / "artifacts" / f"{name}-{k}"
            excluded = [re.sub(r"/\*\*/\*$", "/", e) for e in job["artifacts"].get("exclude", [])]
            for path in job["artifacts"]["paths"]:
                for f in (checkout / path).rglob("*") if (checkout / path).is_dir() else []:
                    rel = f.relative_to(checkout).as_posix()
                    if f.is_file() and not any(rel.startswith(e) for e in excluded):
                        (kept / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, kept / rel)
            artifacts.setdefault(name, []).append(kept)
    answered = [i for i, s in enumerate(said) if "the first bad commit is one of 2" in s]
    assert answered, "\n".join(said)[-5000:]
    # the answer from the merges, each round's commit built by each shard, the state without trees
    final = json.loads((tmp_path / "artifacts" / "merge-9-1" / "results" / "bisect" / "bisect.json").read_text())
    assert [a["subject"] for a in final["answer"]] == ["change 5", "change 6"]
    assert {s["commit"] for s in final["skipped"]} == {shas[5]} and final["bundle"] is None  # two could be it
    assert not list((tmp_path / "artifacts").glob("merge-*/results/bisect/tree"))
    assert list((tmp_path / "artifacts").glob("round-1-2/results/bisect/parts/round-1/shard-2.json"))
    # rounds after the answer: nothing to run, the answer said again
    assert "nothing left to run in round" in said[-2] and "the first bad commit is one of 2" in said[-1]


def test_the_jenkins_bisect_pipeline_runs_the_plan_then_rounds_until_the_answer() -> None:
    text = template("jenkins", "--shards", "2", "--rounds", "5", "--bisect", BISECT)
    assert f"sh '''scripts/dev tbctl bisect {BISECT} --plan results/bisect --shards 2 --rounds 5'''" in text
    assert 'sh "scripts/dev tbctl bisect --resume results/bisect --shard ${index}/2"' in text
    assert "sh '''scripts/dev tbctl bisect --resume results/bisect --merge'''" in text
    assert "for (int r = 1; r <= 5; r++)" in text and "if (answered) {" in text
