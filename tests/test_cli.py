"""CLI behaviour that needs no VM: bad input is one line and exit 2, before anything boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.vm import registry


def test_bad_topology_is_rejected_before_boot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text("[machine]\ncpus = 99\n")
    assert cli.main(["smoke", "--topology", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tbctl: {bad}: machine.cpus: must be an integer from 1 to 16 (got 99)"
    assert list(registry.vms_dir().iterdir()) == []


def test_commands_on_unknown_vm(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh", "ghost", "--", "true"]) == 2
    assert "no running VM named 'ghost' (running: none)" in capsys.readouterr().err
    assert cli.main(["down"]) == 2
    assert "give a VM name or --all" in capsys.readouterr().err


def test_a_bed_up_by_hand_is_checked_before_boot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nosuch.toml"
    assert cli.main(["up", "--bed", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"tbctl: {missing}: cannot read bed: No such file or directory"
    assert cli.main(["up", "--bed", "pair", "--topology", "examples/topology.toml"]) == 2
    assert "--bed and --topology" in capsys.readouterr().err
    assert cli.main(["up", "--bed", "pair", "--name", "a-name-too-long-for-two-roles-x"]) == 2
    assert "machine name 'a-name-too-long-for-two-roles-x-target': must be 1-31" in capsys.readouterr().err
    assert cli.main(["inject", "ghost", "nic-remove", "fabric0"]) == 2
    assert "no running VM named 'ghost'" in capsys.readouterr().err
    assert list(registry.vms_dir().iterdir()) == []


def test_status_with_no_vms_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out == ""


def test_help_lists_commands_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("image", "up", "ssh", "qmp", "hotplug", "status", "down", "smoke", "examples:"):
        assert cmd in out


def test_each_command_loads_its_own_group_only() -> None:
    """app.GROUPS names every command each group's module adds (so a command finds its module
    without importing the others); `tbctl ssh` then starts without paramiko, pytest or jinja2's
    other users: the modules only the other commands need stay unimported."""
    import importlib
    import subprocess
    import sys

    from orchestrator.cli import app

    for group, commands in app.GROUPS.items():
        added: list[str] = []

        def add(name: str, added: list[str] = added, **kw: object) -> app.Parser:
            added.append(name)
            return app.Parser(prog=name)
        importlib.import_module(f"orchestrator.cli.{group}").register(add)
        assert tuple(added) == commands, group
    probe = ("import sys; from orchestrator.cli import app; app.parser('ssh'); "
             "print(sorted(m for m in ('orchestrator.cli.runs', 'orchestrator.cli.common', 'orchestrator.engine', "
             "'paramiko', 'pytest') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
