"""The live progress area of `sync` on a terminal (`producer.cli._Progress`), rendered by rich
into a string buffer that rich takes for a terminal.

Checked by hand in a real terminal too (tmux), as the README's section on `sync` says."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from rich.console import Console

from producer.cli import _Progress
from producer.service import RunReport
from producer.sync.run import RunStats

pytestmark = pytest.mark.unit

RESOURCES = ["contacts", "tags", "users"]
BACK_OVER_AREA = "\r\x1b[2K" + "\x1b[1A\x1b[2K" * (len(RESOURCES) - 1)
"""What rich writes before each redraw: up over the area's lines, erasing each one."""


@pytest.fixture
def terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Console, io.StringIO, logging.StreamHandler[io.StringIO]]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150, height=30, color_system=None)
    # The service's log handler writes to the same terminal as the progress area. It is the
    # root logger's only handler here: one left by another test (on a stream pytest has
    # closed since) would print its own error into the area.
    handler = logging.StreamHandler(out)
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    return console, out, handler


def frames(text: str) -> list[str]:
    """The successive drawings of the area (and what was printed above each)."""
    return text.split(BACK_OVER_AREA)


def test_the_area_is_redrawn_in_place_with_log_lines_above_it(
    terminal: tuple[Console, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    console, out, handler = terminal
    progress = _Progress(console, RESOURCES)
    # No refresh thread in between: each frame below is one of the explicit refreshes.
    progress.progress.live.auto_refresh = False
    progress.start()
    progress("tags", RunStats(pages=2, fetched=150), 150)
    progress.progress.refresh()
    logging.getLogger("producer.test").warning("the broker said hello")
    contacts = RunStats(pages=5, fetched=500, duplicates_in_run=3)
    progress("contacts", contacts, 490)
    progress.progress.refresh()
    progress("contacts", contacts, 497)  # the last acknowledgements come after the last page
    tags = RunStats(pages=2, fetched=150)
    progress.done(RunReport("tags", "run", "success", tags, 150, None, None, 0.5))
    progress.progress.refresh()
    reports = [
        RunReport("contacts", "run", "success", contacts, 497, None, None, 2.0),
        RunReport("tags", "run", "success", tags, 150, None, None, 0.5),
        RunReport("users", "run", "failure", RunStats(), 0, None, None, 1.0),
    ]
    progress.finish(reports)
    text = out.getvalue()

    assert text.count("the broker said hello") == 1
    drawn = frames(text)
    assert len(drawn) >= 4  # the first drawing, two refreshes, the line above, the last one
    for frame in drawn:
        lines = [line for line in frame.splitlines() if line.strip()]
        area = [line for line in lines if "the broker said hello" not in line]
        # Each drawing holds each resource once: lines are redrawn, never repeated.
        names = [r for line in area for r in RESOURCES if re.search(rf"\b{r} +\w", line)]
        assert sorted(names) == sorted(RESOURCES), frame
    # The log line was printed where the area was, and the area drawn again below it.
    above = next(f for f in drawn if "the broker said hello" in f)
    assert above.index("the broker said hello") < above.index("contacts")
    last = drawn[-1]
    assert re.search(r"contacts +pages +5 +fetched +500 +acked +490 +skipped +3 ", text)
    # A finished run's rate is over its own duration.
    assert re.search(
        r"contacts +success +pages +5 +fetched +500 +acked +497 +skipped +3 +250 rec/s", last
    )
    assert re.search(r"tags +success +pages +2 +fetched +150 +acked +150 .* 300 rec/s", last)
    assert re.search(r"users +failure +pages +0 ", last)
    # The terminal is given back: cursor shown, the log handler on its own stream again.
    assert text.endswith("\x1b[?25h")
    assert handler.stream is out


def test_close_without_finish_gives_the_terminal_back(
    terminal: tuple[Console, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    console, out, handler = terminal
    stderr = sys.stderr
    progress = _Progress(console, RESOURCES)
    progress.start()
    assert handler.stream is not out  # while live, log lines go through rich
    assert sys.stderr is not stderr
    progress.close()
    progress.close()  # idempotent: the error path and finish() may both call it
    assert handler.stream is out
    assert sys.stderr is stderr
    assert out.getvalue().endswith("\x1b[?25h")
