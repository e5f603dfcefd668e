"""A learner's JupyterLab session: the server `make lab` starts, a lesson run from the menus, a slider moved."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _browser import ROOT, RequestLog, chromium, free_port, screenshot

pytestmark = pytest.mark.browser
LESSON = ROOT / "nbs" / "03_losses.ipynb"
DEMO = ROOT / "tests" / "lab_widget_demo.ipynb"

# Whether a cell shows an error: Lab renders tracebacks (and stderr) with this mime type.
ERRORS_JS = r"""() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(e => e.innerText).filter(t => /Traceback|^\w*(Error|Exception)\b/m.test(t))"""
# Done when no cell is queued or running and every non-empty code cell has run (or an error stopped the run).
DONE_JS = r"""() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const prompts = cells.filter(c => c.querySelector('.jp-InputArea-editor')?.textContent.trim())
                       .map(c => c.querySelector('.jp-InputPrompt')?.textContent.trim() || '');
  if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
  const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .some(e => /Traceback|^\w*(Error|Exception)\b/m.test(e.innerText));
  return errors || prompts.every(p => /\[\d+\]/.test(p));
}"""


def _notebook() -> Path:
    "The lesson with widgets (nbs/03_losses.ipynb) once it calls them, else the small notebook in tests/."
    if os.environ.get("FT_KIT_LAB_NOTEBOOK"): return ROOT / os.environ["FT_KIT_LAB_NOTEBOOK"]  # e.g. for debugging
    if LESSON.exists():
        cells = json.loads(LESSON.read_text(encoding="utf-8"))["cells"]
        if any(c["cell_type"] == "code" and re.search(r"widgets\.\w+\(", "".join(c["source"])) for c in cells):
            return LESSON
    return DEMO


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    "Poll the server's status API until it answers (or the process dies)."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError:
            try: proc.wait(timeout=0.25)  # poll interval: returns early if the server dies
            except subprocess.TimeoutExpired: pass
    pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_kernel_idle(base: str, token: str, rel: str, timeout: float = 180) -> None:
    "Poll the server until the notebook's session has a kernel that reports idle."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as r:
            sessions = json.load(r)
        if any(s.get("path") == rel and (s.get("kernel") or {}).get("execution_state") == "idle" for s in sessions): return
        time.sleep(0.25)  # poll interval of a condition wait
    pytest.fail(f"no idle kernel for {rel} after {timeout} s: {sessions}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "JupyterLab started by .jupyter/lab.sh (as `make lab` does) on a free loopback port; autosave off."
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')  # never write the lesson
    port, token, log = free_port(), secrets.token_hex(16), tmp / "lab.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "IN_TEST": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    env.pop("MPLBACKEND", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(ROOT / ".jupyter" / "lab.sh"), str(port), token], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/api/status?token={token}", proc, log)
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=30)


@pytest.mark.timeout(900)
def test_run_all_and_move_a_slider(lab):
    "Run > Run All Cells on a lesson, then ArrowRight on a slider changes the widget's output; no cell errors."
    base, token = lab
    nb = _notebook()
    saved = nb.read_bytes()
    rel = nb.relative_to(ROOT).as_posix()
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        requests = RequestLog(page)
        page.goto(f"{base}/lab/tree/{rel}?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell", state="attached")
        # the kernel starts by itself (.jupyter/overrides.json: autoStartDefaultKernel); accept the dialog if asked
        page.wait_for_function("() => document.querySelector('.jp-Dialog') || "
                               "document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')")
        if page.locator(".jp-Dialog").count(): page.locator(".jp-Dialog .jp-mod-accept").click()
        _wait_kernel_idle(base, token, rel)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state="attached")
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try: page.wait_for_function(DONE_JS, timeout=600_000, polling=500)
        except Exception:
            screenshot(page, "lab_failure")
            raise
        assert page.evaluate(ERRORS_JS) == [], f"{rel}: a cell shows an error"

        slider = page.locator(".jp-OutputArea-output .widget-slider").first
        slider.wait_for(state="attached", timeout=120_000)
        slider.scroll_into_view_if_needed()
        cell = slider.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' jp-CodeCell ')][1]")
        outputs = cell.locator(".widget-output")
        page.wait_for_function("els => els.some(e => e.innerHTML.trim())", arg=outputs.element_handles(), timeout=120_000)
        before = outputs.evaluate_all("els => els.map(e => e.innerHTML).join('|')")
        readout = slider.locator(".widget-readout").first.inner_text()
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("([els, before]) => els.map(e => e.innerHTML).join('|') !== before && "
                               "els.some(e => e.innerHTML.trim())",
                               arg=[outputs.element_handles(), before], timeout=120_000)
        assert slider.locator(".widget-readout").first.inner_text() != readout, "the slider's value did not move"
        assert page.evaluate(ERRORS_JS) == [], f"{rel}: moving the slider raised an error"
        screenshot(cell, "lab_widget")
        outside = [u for u in requests.outside]
        ctx.close()
    assert not outside, f"JupyterLab requested outside hosts: {outside[:10]}"
    assert nb.read_bytes() == saved, f"the test must not modify {rel}"
