"""JUnit XML from results (a merge's: pytest writes a single run's own), one case per test with
its outcome and artifacts as properties, as `tbctl run --junit` shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.render import render
from orchestrator.results.outcome import KNOWABLE

# outcome -> (JUnit element, type of a <skipped>)
ELEMENTS = {"passed": (None, ""), "skipped": ("skipped", "pytest.skip"), "known failure": ("skipped", "pytest.xfail"),
            "infrastructure error": ("error", ""), **{k: ("failure", "") for k in KNOWABLE}}


def case(test: dict[str, Any]) -> dict[str, Any]:
    """pytest's xunit1 names: classname is the module's dotted path (and class), name the test."""
    module, *classes, name = test["nodeid"].split("::")
    kind = test.get("outcome", "infrastructure error")
    element, type_ = ELEMENTS[kind]
    message = test.get("message") or ""
    if kind == "known failure":
        message = "known failure " + known_text(test["known"])
    return {"classname": ".".join([module.removesuffix(".py").replace("/", "."), *classes]), "name": name,
            "file": module, "time": test.get("duration", 0.0), "outcome": kind, "artifacts": test.get("artifacts"),
            "element": element, "type": type_, "message": message,
            "summary": (message.splitlines() or [kind])[0][:300]}


def write(results: dict[str, Any], path: Path) -> None:
    cases = [case(t) for t in results["tests"]]
    count = {e: sum(1 for c in cases if c["element"] == e) for e in ("failure", "error", "skipped")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render("report/junit.xml.j2", cases=cases, failures=count["failure"], errors=count["error"],
                           skipped=count["skipped"], time=results.get("duration", 0.0),
                           timestamp=results.get("started", "")))


def known_text(rule: dict[str, Any]) -> str:
    """A known failure's rule as the summary and JUnit show it: "(OUTCOME): REASON [LINK]"."""
    return f"({rule['outcome']}): {rule['reason']}" + (f" [{rule['link']}]" if rule.get("link") else "")
