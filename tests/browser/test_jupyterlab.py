"""The course as learners see it: JupyterLab and its widgets in a real (headless) browser.

nbval proves the notebooks execute; these tests prove that in JupyterLab the widgets render and
respond. Each test opens a notebook in a fresh workspace, runs all cells through JupyterLab's own
``notebook:run-all-cells`` command, and waits on the page's state (never a fixed sleep, every wait
bounded). On failure the message names a screenshot under ``--browser-artifacts``
(default ``.pytest_artifacts/browser/``).

``docs/explorer.png`` (the README's screenshot) is the ``explorer.png`` this test writes:
``pytest tests/browser && cp .pytest_artifacts/browser/explorer.png docs/``.
"""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.browser.lab_server import NOTEBOOKS, JupyterLab, alive, port_is_open, stop_and_check

pytestmark = pytest.mark.browser

EXPLORER = "02_wave_phase.ipynb"  # the phase-transition explorer
START_HERE = "00_start_here.ipynb"

LOAD_TIMEOUT_MS = 60_000  # JupyterLab's page, its extensions and the kernel (2 busy cores)
RUN_TIMEOUT_MS = 90_000  # all cells of a notebook in smoke mode (each is < 60 s under nbval)
WIDGET_TIMEOUT_MS = 30_000  # a widget view to render, or to redraw after a slider move

# JavaScript run in the page. Scoped to the notebook the test opened (the current widget).
JS_PANEL = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
JS_KERNEL_IDLE = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle' && !!document.querySelector('.jp-NotebookPanel .jp-CodeCell');
}"""
# Text of every output that shows an error: stderr/error outputs holding a traceback or an
# exception name, and any output holding a traceback (JupyterLab renders error outputs as stderr).
JS_ERRORS = f"""() => {{
    const panel = {JS_PANEL};
    if (!panel) return [];
    return [...panel.querySelectorAll('.jp-OutputArea-output')]
        .filter(el => !el.querySelector('.jp-OutputArea-output'))  // innermost: a widget nests outputs
        .filter(el => {{
            const text = el.innerText || '';
            const stderr = el.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr';
            return /Traceback/.test(text) || (stderr && /\\b[A-Za-z]*Error\\b/.test(text));
        }})
        .map(el => el.innerText.slice(0, 2000));
}}"""
# True once no cell is queued or running and either every code cell has run or one failed.
JS_RUN_FINISHED = f"""() => {{
    const panel = {JS_PANEL};
    if (!panel) return false;
    const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
        .map(el => el.textContent.trim());
    if (prompts.length === 0 || prompts.some(p => p.includes('*'))) return false;
    return prompts.every(p => /\\[\\d+\\]/.test(p)) || ({JS_ERRORS})().length > 0;
}}"""
JS_INTERACT_IMG = f"""() => {{
    const panel = {JS_PANEL};
    const img = panel && panel.querySelector('.widget-interact .jp-OutputArea-output img');
    return img ? img.getAttribute('src') : null;
}}"""


class Browsing:
    """One test's page plus where its screenshots go; failures name the screenshot."""

    def __init__(self, page, lab, artifacts: Path, name: str):
        self.page, self.lab, self.artifacts, self.name = page, lab, artifacts, name

    def shot(self, label: str, locator=None) -> Path:
        path = self.artifacts / f"{self.name}-{label}.png"
        (locator or self.page).screenshot(path=str(path))
        return path

    def fail(self, message: str):
        try:
            where = f"screenshot {self.shot('failure')}"
        except Exception as exc:  # the page itself may be gone
            where = f"no screenshot ({exc!r})"
        pytest.fail(f"{message}\n{where}\nJupyterLab log {self.lab.log_path} (tail):\n{self.lab.log_tail(15)}",
                    pytrace=False)

    def wait(self, js: str, what: str, timeout_ms: int, arg=None):
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_function(js, arg=arg, timeout=timeout_ms, polling=100)
        except PlaywrightTimeout:
            pass  # fail outside the handler: the message is ours, not Playwright's traceback
        self.fail(f"timed out after {timeout_ms / 1000:.0f} s waiting for {what}")

    def open_and_run_all(self, notebook: str) -> None:
        """Open ``notebook`` in a fresh workspace, wait for an idle kernel, run all cells, wait."""
        self.page.goto(self.lab.url(f"lab/workspaces/{self.name}/tree/{notebook}"))
        self.wait(JS_KERNEL_IDLE, f"{notebook} to open with an idle kernel", LOAD_TIMEOUT_MS)
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        self.wait(JS_RUN_FINISHED, f"all cells of {notebook} to finish", RUN_TIMEOUT_MS)
        self.assert_no_errors(f"after running all cells of {notebook}")

    def show_cell(self, locator) -> None:
        """Collapse the file browser; scroll ``locator`` to the bottom edge (its code shows above)."""
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        locator.evaluate("el => el.scrollIntoView({block: 'end'})")
        self.wait(JS_INTERACT_IMG, "the plot to be shown again", WIDGET_TIMEOUT_MS)

    def assert_no_errors(self, when: str) -> None:
        errors = self.page.evaluate(JS_ERRORS)
        if errors:
            self.fail(f"{len(errors)} output(s) show an error {when}:\n" + "\n---\n".join(errors))


@pytest.fixture
def browsing(request, page, lab, artifacts):
    return Browsing(page, lab, artifacts, request.node.name.replace("test_", "", 1))


def _png(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), f"expected an inline PNG, got {src[:40]!r}"
    return base64.b64decode(src[len(prefix):])


def _changed_pixels(a: bytes, b: bytes) -> float:
    """Fraction of pixels that differ between two PNG images (1.0 if their sizes differ)."""
    ia, ib = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    if ia.size != ib.size:
        return 1.0
    diff = ImageChops.difference(ia, ib).convert("L").point(lambda v: 255 if v else 0)
    return diff.histogram()[255] / (ia.size[0] * ia.size[1])


def test_explorer_slider_redraws_plot(browsing):
    """Run the phase explorer, move its first slider: the plot must change, and nothing errors."""
    if not (NOTEBOOKS / EXPLORER).exists():
        pytest.fail(f"notebooks/{EXPLORER} does not exist: the explorer this test drives is missing")
    page = browsing.page
    browsing.open_and_run_all(EXPLORER)
    browsing.wait(JS_INTERACT_IMG, "the interactive plot (.widget-interact img) to render", WIDGET_TIMEOUT_MS)
    explorer = page.locator(".widget-interact").first
    slider = explorer.locator(".widget-slider").first
    readout = slider.locator(".widget-readout")
    explorer.scroll_into_view_if_needed()
    before_src, before_value = page.evaluate(JS_INTERACT_IMG), readout.inner_text()
    before_shot = browsing.shot("before", explorer)

    handle = slider.locator(".noUi-handle").first
    now, top = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemax"))
    at_max = now is not None and top is not None and float(now) >= float(top)
    handle.focus()
    page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")  # one step, as with the keyboard
    # Redrawn (a new image) or failed (the callback's traceback shows in the widget's output).
    browsing.wait(f"""(old) => {{ const src = ({JS_INTERACT_IMG})();
                      return (src !== null && src !== old) || ({JS_ERRORS})().length > 0; }}""",
                  f"the plot to redraw after moving the slider from {before_value!r}",
                  WIDGET_TIMEOUT_MS, arg=before_src)
    browsing.assert_no_errors("after moving the slider")
    after_src, after_value = page.evaluate(JS_INTERACT_IMG), readout.inner_text()
    after_shot = browsing.shot("after", explorer)

    assert after_value != before_value, f"slider readout stayed {before_value!r}"
    changed = _changed_pixels(_png(before_src), _png(after_src))
    assert changed > 0.001, f"the plot barely changed ({changed:.2%} of pixels); see {before_shot}, {after_shot}"
    on_screen = _changed_pixels(before_shot.read_bytes(), after_shot.read_bytes())
    assert on_screen > 0.001, f"the page did not show the new plot; see {before_shot}, {after_shot}"
    browsing.show_cell(explorer)
    _save_small(browsing.shot("page"), browsing.artifacts / "explorer.png")


def test_start_here_reports_widgets_working(browsing):
    """00_start_here's environment check says widgets are ok, and its widget view renders."""
    page = browsing.page
    browsing.open_and_run_all(START_HERE)
    text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").all_inner_texts()
    report = "\n".join(text)
    for name in ("widgets", "widgets in JupyterLab"):
        if not re.search(rf"^{re.escape(name)}\s+ok\b", report, re.M):
            browsing.fail(f"the environment check does not report {name!r} as ok:\n{report[:3000]}")
    browsing.wait("""() => [...document.querySelectorAll('.jp-NotebookPanel .widget-label')]
                         .some(el => el.textContent.includes('widgets: working') && el.offsetParent !== null)""",
                  "the Label 'widgets: working' to render (if it never does, the widgets frontend "
                  "extension is not working)", WIDGET_TIMEOUT_MS)
    browsing.shot("widgets", page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)"))


def test_jupyterlab_shuts_down_completely(tmp_path):
    """Stopping the server also stops its kernels and frees the port (what every fixture relies on)."""
    lab = JupyterLab.start(NOTEBOOKS, tmp_path)
    try:
        kernel = lab.api("POST", "kernels", {"name": "python3"}, timeout=30.0)
        deadline = time.monotonic() + 30
        while len(lab.processes()) < 2 and time.monotonic() < deadline:  # the kernel process appears
            time.sleep(0.1)
        procs = lab.processes()
        assert len(procs) >= 2, f"kernel {kernel['id']} never started a process"
        assert port_is_open(lab.port)
    finally:
        stop_and_check(lab)
    survivors = [p.pid for p in procs if alive(p)]
    assert not survivors, f"processes left running after stop: {survivors}"
    assert not port_is_open(lab.port)


def _save_small(src: Path, dst: Path) -> None:
    """A 256-colour palette PNG of ``src`` (about 50 kB): what docs/explorer.png is made from."""
    Image.open(src).convert("RGB").quantize(colors=256).save(dst, optimize=True)
