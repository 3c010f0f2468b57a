"""The guest's signal trace: who sent which signal to whom from where, and the signals that are
findings by themselves; every sample of tests/signal_traces/ gets its expected titles."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.report import signals

CORPUS = sorted((Path(__file__).parent / "signal_traces").glob("*.txt"))


def sample(path: Path) -> tuple[list[str], str]:
    first, text = path.read_text().split("\n", 1)
    assert first.startswith("TITLES: "), f"{path.name}: first line must be 'TITLES: ...'"
    titles = first.removeprefix("TITLES: ")
    return ([] if titles == "none" else titles.split(" | ")), text


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_titles(path: Path) -> None:
    want, text = sample(path)
    assert [f.title for f in signals.findings(signals.parse(text))] == want


def test_an_event_is_read_with_its_sender_and_stack() -> None:
    _, text = sample(Path(__file__).parent / "signal_traces" / "fio-sigpipe-nvme-tcp-submit.txt")
    sent = signals.parse(text)
    assert [(s.name, s.target, s.delivered) for s in sent] == [
        ("SIGTERM", "(udev-worker)", True), ("SIGPIPE", "fio", True), ("SIGPIPE", "kworker/1:1H", False),
        ("SIGPIPE", "kworker/0:1H", False), ("SIGABRT", "fio", True)]
    pipe = sent[1]
    assert (pipe.sender, pipe.sender_pid, pipe.pid) == ("fio", 346, 346)
    # the trace's own frame is dropped, clone suffixes too
    assert pipe.stack[:3] == ("__send_signal_locked", "do_send_sig_info", "sk_stream_error")
    assert "blk_mq_plug_issue_direct" in pipe.stack and pipe.stack[-1] == "entry_SYSCALL_64_after_hwframe"
    assert sent[0].sender == "systemd-udevd" and sent[0].stack[-3] == "__x64_sys_kill"
    assert pipe.describe().startswith("SIGPIPE to fio[346] from its own context, delivered:\n    __send_signal_locked")


def test_a_signal_the_task_ignored_is_no_finding() -> None:
    """The same SIGPIPE, sent to a kworker that ignores it, harmed nothing."""
    _, text = sample(Path(__file__).parent / "signal_traces" / "fio-sigpipe-nvme-tcp-submit.txt")
    ignored = [s for s in signals.parse(text) if s.target.startswith("kworker")]
    assert ignored and signals.findings(ignored) == []
    delivered = [signals.Signal(s.sig, s.sender, s.sender_pid, s.target, s.pid, 0, s.stack) for s in ignored]
    assert [f.title for f in signals.findings(delivered)] == ["SIGPIPE from the kernel to kworker/0:1H in nvme_tcp_try_send"]


@pytest.mark.parametrize("text", ["", "# tracer: nop\n#\n", "cat: /sys/kernel/debug/tracing/instances/x/trace: No such file",
                                  "   fio-1 [000] d..1. 1.0: signal_generate: sig=13"])
def test_no_trace_or_a_truncated_one_gives_nothing(text: str) -> None:
    assert signals.parse(text) == []


def test_a_stack_cut_short_keeps_what_it_has() -> None:
    _, text = sample(Path(__file__).parent / "signal_traces" / "fio-sigpipe-nvme-tcp-submit.txt")
    cut = text[:text.index(" => nvme_tcp_queue_rq")]
    pipe = next(s for s in signals.parse(cut) if s.target == "fio")
    assert pipe.stack[-1] == "nvme_tcp_try_send" and signals.findings([pipe]) == []  # no block I/O frame seen
