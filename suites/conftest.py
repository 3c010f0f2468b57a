"""Suites run on tbctl's pytest plugin (fixtures: machine, ssh, qmp, hotplug, artifacts, bed)."""

pytest_plugins = ["orchestrator.pytest_plugin"]
