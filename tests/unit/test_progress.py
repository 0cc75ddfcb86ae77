"""The live progress area of `sync` on a terminal (`producer.cli._Progress`), rendered by rich
into a string buffer that rich takes for a terminal.

The last test draws it in a real terminal: a tmux pane, captured when the workers are done."""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

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


# --------------------------------------------------------------------------- a real terminal

PANE_SCRIPT = """
import logging, sys, threading, time
from rich.console import Console
from producer.cli import _Progress
from producer.observability.logging import configure_logging
from producer.service import RunReport
from producer.sync.run import RunStats

configure_logging("INFO", "text")  # the service's own handler, on the terminal's stderr
resources = %(resources)r
progress = _Progress(Console(file=sys.stderr), resources)
progress.start()
log = logging.getLogger("producer.pane")

def work(resource):
    for page in range(1, 31):
        progress(resource, RunStats(pages=page, fetched=page * 100), page * 100)
        if page %% 10 == 0:
            log.warning("%%s reached page %%d", resource, page)
        time.sleep(0.02)
    stats = RunStats(pages=30, fetched=3000)
    progress.done(RunReport(resource, "run", "success", stats, 3000, None, None, 1.0))

workers = [threading.Thread(target=work, args=(r,)) for r in resources]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
progress.finish([])
"""


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        # As for helm and promtool: a CI machine without it must not pass silently.
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("tmux not found (apt-get install tmux; CI must have it)", pytrace=False)
        pytest.skip("tmux not found (apt-get install tmux)")
    return tmux


@pytest.mark.tools
def test_in_a_real_terminal_each_line_is_drawn_once(tmp_path: Path) -> None:
    """Five workers report and log side by side in a 150x30 tmux pane: the pane (and its
    scrollback) ends with each resource's line once, each log line once, above the area."""
    tmux = _tmux()
    resources = ["contacts", "companies", "users", "tags", "engagements"]
    script = tmp_path / "pane.py"
    script.write_text(PANE_SCRIPT % {"resources": resources}, encoding="utf-8")
    server = [tmux, "-L", f"progress-{uuid.uuid4().hex[:8]}", "-f", os.devnull]
    done = "progress-done"
    # rich takes COLUMNS / LINES over the terminal's own size, and the shell that runs the
    # pane's command may set them to 80x24: the pane's size is what is under test.
    command = f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} {shlex.quote(str(script))}; "
    command += f"{' '.join(map(shlex.quote, server))} wait-for -S {done}; sleep 60"
    repo = Path(__file__).resolve().parents[2]
    start = [*server, "new-session", "-d", "-x", "150", "-y", "30", "-c", str(repo), command]
    subprocess.run(start, check=True, timeout=30)
    try:
        subprocess.run([*server, "wait-for", done], check=True, timeout=60)
        pane = subprocess.run(
            [*server, "capture-pane", "-p", "-S", "-"],
            check=True,
            timeout=30,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run([*server, "kill-server"], check=False, timeout=30)
    lines = [line for line in pane.splitlines() if line.strip()]
    area = [line for line in lines if re.search(r"\bpages +\d", line)]
    logged = [line for line in lines if "reached page" in line]
    assert len(area) == len(resources), pane
    for resource in resources:
        assert sum(bool(re.search(rf"\b{resource} +success +pages +30 ", a)) for a in area) == 1, (
            pane
        )
        for page in (10, 20, 30):
            mentions = [line for line in logged if f"{resource} reached page {page}" in line]
            assert len(mentions) == 1, pane
    # Every log line is above the area: the area is the last thing on the screen.
    assert lines[-len(resources) :] == area, pane
    assert len(logged) == 3 * len(resources), pane
