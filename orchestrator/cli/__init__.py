"""The tbctl command: argument parsing and printing only; everything it does is a call into the
packages below it."""

from orchestrator.cli.app import main

__all__ = ["main"]
