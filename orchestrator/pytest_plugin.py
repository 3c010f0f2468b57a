"""The plugin's public name, as suites load it (`pytest_plugins = ["orchestrator.pytest_plugin"]`)
and `tbctl run` passes it (`-p orchestrator.pytest_plugin`); the engine itself is
orchestrator.engine.plugin."""

pytest_plugins = ["orchestrator.engine.plugin"]
