"""The docs site as a reader sees it: built offline, served on loopback, loaded in Debian chromium."""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from _browser import ROOT, RequestLog, chromium, screenshot

pytestmark = pytest.mark.browser
SITE = ROOT / "docs" / "_build" / "html"
SRC = ROOT / "docs" / "_src"
WIDGET_REPR = re.compile(r"\b(VBox|HBox|Box|IntSlider|FloatSlider|Dropdown|Output|interactive)\(children=|"
                         r"\b(IntSlider|FloatSlider)\(value=")


def _inputs() -> list[Path]:
    "Files the site is built from."
    return [*(ROOT / "nbs").glob("*.ipynb"), *(ROOT / "ft_kit").glob("*.py"), *(ROOT / "docs").glob("*.py"),
            *(ROOT / "docs" / "_static").glob("*"), ROOT / "docs" / "package-lock.json", ROOT / "settings.ini"]


@pytest.fixture(scope="module")
def site() -> Path:
    "The built site: rebuilt with docs/build.sh unless docs/_build/html is newer than everything it is built from."
    index = SITE / "index.html"
    if not index.exists() or max(p.stat().st_mtime for p in _inputs()) > index.stat().st_mtime:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        r = subprocess.run(["bash", "docs/build.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, f"docs/build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return SITE


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def base_url(site):
    "The site served by http.server on a free loopback port, for this module only."
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b: yield b


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def _pages(site: Path) -> list[str]:
    "Every HTML page of the site, relative to its root."
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts)


def _lessons(site: Path) -> list[str]:
    "Notebook pages (index, lessons, figures and widgets), in sidebar order."
    return [p.stem for p in sorted(SRC.glob("*.ipynb")) if (site / f"{p.stem}.html").exists()]


def _count_outputs(stem: str, mime: str) -> int:
    nb = json.loads((SRC / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return sum(mime in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def _prose(path: Path) -> str:
    "The lower-cased markdown of a Sphinx source (notebook markdown cells, or a .md page)."
    if path.suffix == ".md": return path.read_text(encoding="utf-8").lower()
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                     for c in cells if c["cell_type"] == "markdown").lower()


def _loaded(context, urls: list[str], width: int = 4):
    "Yield (url, tab, its RequestLog) for each url once network-idle, `width` tabs loading at a time (a fresh tab each)."
    for i in range(0, len(urls), width):
        group = []
        for url in urls[i:i + width]:
            tab = context.new_page()
            group.append((url, tab, RequestLog(tab)))
            tab.goto(url, wait_until="commit")
        for url, tab, log in group:
            tab.wait_for_load_state("networkidle")
            yield url, tab, log
            tab.close()


def test_every_page_loads_offline(site, base_url, page):
    """Each page loads with no failed request, no request to another host, no widget shown as a text repr, and
    (lesson pages) as many loaded, non-empty images as its notebook has saved PNG/SVG outputs."""
    pages, problems, lessons = _pages(site), [], set(_lessons(site))
    assert len(pages) >= 3, pages
    for url, tab, log in _loaded(page.context, [f"{base_url}/{rel}" for rel in pages]):
        rel = url.removeprefix(f"{base_url}/")
        text = "\n".join(tab.locator("div.cell_output").all_inner_texts())  # outputs, not code that builds widgets
        if m := WIDGET_REPR.search(text): problems.append(f"{rel}: widget shown as text: {m.group(0)}...")
        problems += [f"{rel}: failed {u}" for u in log.failed] + [f"{rel}: outside host {u}" for u in log.outside]
        if (stem := rel.removesuffix(".html")) in lessons:
            want = _count_outputs(stem, "image/png") + _count_outputs(stem, "image/svg+xml")
            shown = tab.locator("div.cell_output img").count()
            loaded = tab.evaluate("""() => [...document.querySelectorAll('div.cell_output img')]
                                     .filter(i => i.complete && i.naturalWidth > 0).length""")
            if shown < want or loaded < want: problems.append(f"{stem}: {loaded}/{shown} images shown, {want} saved")
    assert not problems, "\n".join(problems[:40])
    best = max((s for s in lessons if s != "index"), key=lambda s: _count_outputs(s, "image/png"))
    page.goto(f"{base_url}/{best}.html", wait_until="networkidle")
    page.locator("div.cell_output img").first.scroll_into_view_if_needed()
    screenshot(page, "site_lesson")


def test_home_page(site, base_url, page):
    "The home page has the kit's title and a sidebar listing the lessons in order."
    page.goto(f"{base_url}/index.html", wait_until="networkidle")
    assert "ft_kit" in page.title()
    nav = page.locator("nav.bd-links a.reference.internal")
    labels = [nav.nth(i).inner_text().strip() for i in range(nav.count())]
    hrefs = [nav.nth(i).get_attribute("href") for i in range(nav.count())]
    lessons = [s for s in _lessons(site) if s != "index"]
    linked = [s for s in lessons if any(h and h.split("#")[0].endswith(f"{s}.html") for h in hrefs)]
    assert linked == lessons, f"sidebar {labels} / {hrefs} should link every lesson in order: {lessons}"
    screenshot(page, "site_home")


def test_math_is_rendered(site, base_url, page):
    "Math is typeset by the site's own MathJax (mjx-container elements), on the losses lesson when it exists."
    stems = [s for s in _lessons(site) if "class=\"math" in (site / f"{s}.html").read_text(encoding="utf-8")]
    if (ROOT / "nbs" / "03_losses.ipynb").exists():
        assert "03_losses" in stems, "nbs/03_losses.ipynb has math, but its page has no math elements"
        stem = "03_losses"
    elif stems: stem = stems[0]
    else: pytest.skip("no lesson with math yet (nbs/03_losses.ipynb is the first)")
    log = RequestLog(page)
    page.goto(f"{base_url}/{stem}.html", wait_until="networkidle")
    page.wait_for_selector("mjx-container", state="attached", timeout=60_000)
    n_math = page.locator("span.math, div.math").count()
    page.wait_for_function(f"document.querySelectorAll('mjx-container').length >= {n_math}", timeout=60_000)
    assert any("/_static/mathjax/" in u for u in log.urls), "MathJax should come from the site's _static/mathjax"
    assert not log.outside and not log.failed, (log.outside, log.failed)
    page.locator("mjx-container").first.scroll_into_view_if_needed()
    screenshot(page, "site_math")


def test_search_finds_a_lesson(site, base_url, page):
    "The full-text search finds a lesson by a word that only its text uses."
    lessons = [s for s in _lessons(site) if s != "index" and not s.startswith("8")]
    if not lessons: pytest.skip("no lesson yet")
    stem = "03_losses" if "03_losses" in lessons else lessons[0]
    texts = {p.stem: _prose(p) for p in SRC.rglob("*") if p.suffix in (".ipynb", ".md")}
    own = texts.pop(stem)
    words = set(re.findall(r"\b[a-z]{8,}\b", own)) - {w for t in texts.values() for w in re.findall(r"\b[a-z]{8,}\b", t)}
    assert words, f"no word unique to {stem}"
    word = max(sorted(words), key=own.count)
    page.goto(f"{base_url}/search.html?q={word}", wait_until="networkidle")
    page.wait_for_selector("#search-results ul.search li a", timeout=60_000)
    hrefs = page.locator("#search-results ul.search li a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert any(h and stem in h for h in hrefs), f"searching {word!r}: {hrefs} does not include {stem}"


def test_widgets_render_from_saved_state(site, base_url, page):
    "Widgets saved with their state are drawn by the site's own widget manager, followed by the `make lab` note."
    stems = [s for s in _lessons(site) if "application/vnd.jupyter.widget-state+json" in (site / f"{s}.html").read_text(encoding="utf-8")]
    if not stems: pytest.skip("no notebook has saved widget state; widgets appear as a `make lab` note")
    for stem in stems:
        log = RequestLog(page)
        page.goto(f"{base_url}/{stem}.html", wait_until="networkidle")
        views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        page.wait_for_function(f"document.querySelectorAll('.jupyter-widgets.widget-inline-hbox, .jupyter-widgets.widget-box').length >= {views}",
                               timeout=60_000)
        assert page.locator(".live-note").count() >= views, f"{stem}: a `make lab` note should follow each widget"
        assert any("/_static/html-manager/" in u for u in log.urls) and not log.outside and not log.failed, (log.outside, log.failed)
    page.locator(".jupyter-widgets").first.scroll_into_view_if_needed()
    screenshot(page, "site_widget")


def test_next_links_lead_through_the_lessons(site):
    "Each lesson page ends with a working link to the next lesson (the route the index describes), never a .ipynb link."
    from html.parser import HTMLParser
    class Links(HTMLParser):
        def __init__(self): super().__init__(); self.hrefs = []
        def handle_starttag(self, tag, attrs): self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]
    nbs = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
    checked = 0
    for stem in nbs:
        src = json.loads((ROOT / "nbs" / f"{stem}.ipynb").read_text())["cells"][-1]
        m = re.match(r"\*\*Next:\*\* \[(\w+)\]", "".join(src["source"])) if src["cell_type"] == "markdown" else None
        if not m: continue
        p = Links(); p.feed((site / f"{stem}.html").read_text(encoding="utf-8"))
        targets = [h.split("#")[0] for h in p.hrefs]
        assert f"{m.group(1)}.html" in targets, f"{stem}.html has no link to {m.group(1)}.html (links: {targets[-8:]})"
        assert not [h for h in targets if h.endswith(".ipynb")], f"{stem}.html links to a notebook file, not a page"
        assert (site / f"{m.group(1)}.html").exists()
        checked += 1
    assert checked >= 15, f"only {checked} lessons end with a Next link"
