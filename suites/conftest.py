"""Suites run on tbctl's pytest plugin (fixtures: machine, machines, ssh, qmp, hotplug, inject,
fabric, artifacts, run)."""

pytest_plugins = ["orchestrator.pytest_plugin"]
