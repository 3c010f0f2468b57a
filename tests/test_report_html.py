"""The HTML report, as a person sees it: rendered by a real browser (Debian's headless chromium)
from a run's and a merge's results, one row per test, outcomes and texts as the results say."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from conftest import browser, tbctl

REPO = Path(__file__).resolve().parent.parent
DEMOS = sorted(str(p) for p in (REPO / "tests" / "engine_suites" / "shards").glob("*.py"))


class Rows(HTMLParser):
    """The test rows of a DOM: each row's data-outcome, whether its details are open, its text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._in = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "test":
            self.rows.append({"outcome": a.get("data-outcome"), "open": False, "text": "", "tags": []})
            self._in = 1
        elif self._in:
            self.rows[-1]["tags"].append(tag)
            if tag == "details" and "open" in a:
                self.rows[-1]["open"] = True
            if tag == "tr":
                self._in += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in and tag == "tr":
            self._in -= 1

    def handle_data(self, data: str) -> None:
        if self._in:
            self.rows[-1]["text"] += data


def rows(page: Path, tmp_path: Path) -> list[dict]:
    p = Rows()
    p.feed(browser(page, tmp_path, "--dump-dom"))
    return p.rows


def test_a_run_and_its_shards_merged_render_one_row_per_test(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", *DEMOS, "--json", "run.json", "--html", "run.html", env={"TBCTL_DEMO_FAIL": "alpha"})
    assert r.returncode == 1 and "report:    run.html" in r.stdout, r.stdout[-2000:]
    doc = json.loads((tmp_path / "run.json").read_text())
    shown = rows(tmp_path / "run.html", tmp_path)
    assert [row["outcome"] for row in shown] == [t["outcome"] for t in doc["tests"]]
    for row, t in zip(shown, doc["tests"], strict=True):
        assert t["nodeid"] in row["text"]
        assert row["open"] == (t["outcome"] == "failed")  # a failure's details are open, with its message
        if t["outcome"] == "failed":
            assert t["message"].splitlines()[0] in row["text"] and "svg" in row["tags"]

    for k in (1, 2):
        tbctl(tmp_path, "run", *DEMOS, "--shard", f"{k}/2", "--json", f"s{k}.json", env={"TBCTL_DEMO_FAIL": "alpha"})
    r = tbctl(tmp_path, "merge", "s1.json", "s2.json", "--html", "merged.html")
    merged = rows(tmp_path / "merged.html", tmp_path)
    assert sorted(row["outcome"] for row in merged) == sorted(t["outcome"] for t in doc["tests"])
    assert len(merged) == len(doc["tests"])


def test_texts_are_shown_as_text(tmp_path: Path) -> None:
    """A message or test id with markup in it (a console line, a parameter) is never markup."""
    doc = {"exit_code": 1, "counts": {"failed": 1}, "tests": [
        {"nodeid": "suites/x.py::test_a[<b>bold</b>]", "outcome": "failed", "duration": 1.0,
         "message": "AssertionError: <script>document.title='owned'</script>", "events": [
             {"kind": "phase", "what": "call", "at": 0.0, "end": 1.0},
             {"kind": "fault", "what": "<img src=x>", "at": 0.5}]}]}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    r = tbctl(tmp_path, "report", "r.json")
    assert r.returncode == 0 and (tmp_path / "r.html").is_file(), r.stderr
    (row,) = rows(tmp_path / "r.html", tmp_path)
    assert not {"b", "script", "img"} & set(row["tags"])
    assert "<script>document.title='owned'</script>" in row["text"] and "<img src=x>" in row["text"]
    assert "<title>tbctl: 1 · 1 tests</title>" in browser(tmp_path / "r.html", tmp_path, "--dump-dom")


def test_a_report_of_what_is_not_results_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    r = tbctl(tmp_path, "report", "x.json")
    assert (r.returncode, r.stderr.strip()) == (2, "tbctl: x.json: not a results.json: needs exit_code and tests: "
                                                   "[{nodeid, duration}, ...]")
