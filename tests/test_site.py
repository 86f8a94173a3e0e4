"""The course website (tools/site, `make site`): built offline from the stored outputs.

One build into a temporary folder (about 45 s of CPU time) serves every test: a page per
lecture, per released assignment and for the API; no line of a solution region or hidden-test
block leaks; every internal link, image, script and stylesheet resolves; figures carry their
alt text; MathJax is local. A headless Chromium then loads each lecture page and reads the
rendered DOM (skipped, with the reason, where no browser can run).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "site"))
import alt_text  # noqa: E402  (tools/site is not a package)
import build  # noqa: E402

LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
RELEASED = sorted((ROOT / "assignments").glob("*/*.ipynb"))
EXTERNAL = ("http:", "https:", "mailto:", "javascript:", "data:", "//")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    build.build(out)
    return out


def _html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@functools.lru_cache(maxsize=None)
def _soup(path: Path) -> BeautifulSoup:
    """The parsed page, parsed once for all the tests (read-only: do not modify it)."""
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


# ---------------------------------------------------------------- alt text, before any build

def _figures(nb: nbformat.NotebookNode) -> list[tuple[int, int, list[str]]]:
    """(cell index, figures shown on the site, declared alt texts) for each cell with figures."""
    nb = copy.deepcopy(nb)
    build.freeze_widgets(nb)
    rows = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        n = sum(1 for out in cell.get("outputs", []) for mime in out.get("data", {})
                if mime.startswith("image/"))
        if n or alt_text.ALT_KEY in cell.metadata:
            rows.append((i, n, alt_text.cell_alt_texts(cell.metadata)))
    return rows


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_every_lecture_figure_has_alt_text(path):
    """Every figure of every lecture (widgets' pictures included) has one alt sentence."""
    for index, n, alts in _figures(nbformat.read(path, as_version=4)):
        assert len(alts) == n, (
            f"{path.name}, cell {index}: {n} figure(s) but {len(alts)} alt text(s); add the cell "
            f"metadata \"alt\": one sentence saying what the figure shows (a list, one per figure)")
        for alt in alts:
            assert len(alt.split()) >= 5 and alt.strip().endswith("."), \
                f"{path.name}, cell {index}: alt text should be a sentence, got {alt!r}"


def test_display_math_is_joined_onto_one_line():
    """A formula's continuation line starting with '+' must not become a Markdown list item."""
    text = "Then $$a\n+ b$$ and $c$,\n\n$$x\n= y$$\n- a real list item"
    assert build.one_line_display_math(text) == "Then $$a + b$$ and $c$,\n\n$$x = y$$\n- a real list item"


def test_freeze_widgets_keeps_the_last_picture_once():
    """A widget output becomes a note plus its saved picture, unless the notebook already shows it."""
    png = "iVBORw0KGgo="
    state = {"v": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_i"]}},
             "i": {"model_name": "ImageModel", "state": {}, "buffers": [{"path": ["value"], "data": png}]}}
    view = {"text/plain": "Explorer(...)", build.WIDGET_VIEW: {"model_id": "v"}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("execute_result", data=view, execution_count=1)])])
    nb.metadata["widgets"] = {build.WIDGET_STATE: {"state": state}}
    alone = copy.deepcopy(nb)
    assert build.freeze_widgets(alone) == 1 and "widgets" not in alone.metadata
    assert [list(o.data) for o in alone.cells[0].outputs] == [["text/markdown"], ["image/png", "text/plain"]]
    assert alone.cells[0].outputs[1].data["image/png"] == png
    nb.cells.append(nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", data={"image/png": png})]))
    build.freeze_widgets(nb)
    assert [list(o.data) for o in nb.cells[0].outputs] == [["text/markdown"]]


# ---------------------------------------------------------------- the built site

def test_a_page_per_lecture_assignment_and_api_module(site):
    for path in LECTURES:
        page = site / "lectures" / f"{path.stem}.html"
        assert page.is_file(), f"no page for {path.name}"
        assert _soup(page).find("h1"), f"{page} has no title"
    for path in RELEASED:
        assert (site / path.relative_to(ROOT).with_suffix(".html")).is_file(), f"no page for {path}"
    assert (site / "index.html").is_file() and (site / "api" / "index.html").is_file()
    api = _soup(site / "api" / "course_lib.attacks.html")
    assert api.select("dl.py.function dt#course_lib\\.attacks\\.pgd"), "course_lib.attacks.pgd not documented"
    staged = json.loads((site / "pages.json").read_text())
    assert len(staged["api"]) >= 20 and "api/course_lib.attacks" in staged["api"]
    for doc in staged["lectures"] + staged["assignments"] + staged["api"]:
        assert (site / f"{doc}.html").is_file(), f"no page for {doc}"
    home = _tokens(_soup(site / "index.html").get_text(" "))
    assert "make lab" in home and "make test" in home, "the home page lacks the quick-start commands"
    for path in LECTURES:   # the home page links every lecture
        assert _soup(site / "index.html").find("a", href=f"lectures/{path.stem}.html"), path.name


def _tokens(text: str) -> str:
    """Lower-case words and numbers, space-joined: markup, math delimiters and punctuation gone."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _secret_lines(nb: nbformat.NotebookNode) -> list[str]:
    """The lines inside solution regions and hidden-test blocks of an nbgrader source notebook."""
    secret, inside = [], None
    for cell in nb.cells:
        for line in cell.source.splitlines():
            mark = line.strip()
            if mark in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = mark
            elif mark in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = None
            elif inside:
                secret.append(re.sub(r"^\s*(\d+\.|[-*+])\s+", "", line))  # list markers do not render
        inside = None
    return secret


def _source_text(path: Path) -> str:
    """A notebook's cell sources (not its JSON, whose escapes would split words), or a file's text."""
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    return path.read_text(encoding="utf-8")


def test_no_solution_or_hidden_test_line_leaks(site):
    """No non-trivial line of solutions/ (solution regions, hidden tests) appears in the site."""
    chunks = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            chunks.append(_soup(path).get_text(" "))
        if path.is_file() and path.suffix in {".html", ".js", ".json", ".txt", ".ipynb", ".md", ".inv"} \
                and "mathjax" not in path.parts:
            chunks.append(path.read_text(encoding="utf-8", errors="ignore"))
    published = " " + " ".join(_tokens(c) for c in chunks) + " "
    # what students see anyway: every released notebook, the lectures, the library's source
    public = LECTURES + RELEASED + sorted((ROOT / "course_lib").rglob("*.py"))
    public_text = " " + " ".join(_tokens(_source_text(p)) for p in public) + " "
    checked = 0
    for source in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        for line in _secret_lines(nbformat.read(source, as_version=4)):
            words = _tokens(line)
            if len(words.split()) < 4 or f" {words} " in public_text:
                continue   # blank, trivial, or public anyway
            checked += 1
            assert f" {words} " not in published, f"{source.relative_to(ROOT)}: secret line on the site: {line!r}"
    assert checked > 100, f"only {checked} secret lines checked: the solution markers changed?"


def test_every_internal_link_image_script_and_stylesheet_resolves(site):
    ids: dict[Path, set[str]] = {}
    broken = []
    for page in _html_pages(site):
        if page.relative_to(site).parts[0] == "_static":
            continue   # the theme's template fragments, not pages
        soup = _soup(page)
        for tag, attr in (("a", "href"), ("img", "src"), ("script", "src"), ("link", "href")):
            for node in soup.find_all(tag, attrs={attr: True}):
                url = node[attr]
                if not url or url.startswith(EXTERNAL):
                    continue
                parts = urlsplit(url)
                target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_file():
                    broken.append(f"{page.relative_to(site)}: {tag} {url}")
                    continue
                if parts.fragment and target.suffix == ".html":
                    if target not in ids:
                        ids[target] = {n["id"] for n in _soup(target).find_all(id=True)}
                    if unquote(parts.fragment) not in ids[target]:
                        broken.append(f"{page.relative_to(site)}: {tag} {url} (no such anchor)")
    assert not broken, "\n".join(broken[:30])


def test_every_lecture_image_has_alt_text(site):
    """Every <img> of a lecture page has alt text: the notebook's own sentences, in order."""
    for path in LECTURES:
        images = _soup(site / "lectures" / f"{path.stem}.html").find_all("img")
        for img in images:
            assert img.get("alt", "").strip(), f"{path.name}: <img src={img.get('src')}> has no alt"
        declared = [a for _, _, alts in _figures(nbformat.read(path, as_version=4)) for a in alts]
        assert [img["alt"] for img in images if img.find_parent(class_="cell_output")] == declared, path.name


def test_math_and_every_script_are_local(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in _html_pages(site):
        soup = _soup(page)
        for script in soup.find_all("script", src=True):
            assert not script["src"].startswith(EXTERNAL), f"{page.name}: remote script {script['src']}"
        for link in soup.find_all("link", rel="stylesheet"):
            assert not link["href"].startswith(EXTERNAL), f"{page.name}: remote stylesheet {link['href']}"
    lecture = _soup(site / "lectures" / f"{LECTURES[0].stem}.html")
    assert any("mathjax/tex-chtml.js" in s["src"] for s in lecture.find_all("script", src=True))
    assert lecture.find(class_="math"), "no math on the first lecture's page"


# ---------------------------------------------------------------- in a real browser

def _chromium() -> str | None:
    for name in (os.environ.get("COURSE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_lecture_pages_in_headless_chromium(site, tmp_path):
    """Each lecture page in Chromium: math typeset, images loaded with alt, no console errors."""
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e .[test])")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []   # Chromium's sandbox refuses root
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=browser_path, args=args)
        except Exception as exc:  # a browser that cannot start here is a reason to skip, not a failure
            pytest.skip(f"Chromium at {browser_path} does not start: {exc}")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
        for path in LECTURES:
            problems.clear()
            page.goto((site / "lectures" / f"{path.stem}.html").as_uri())
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                   timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
            page.wait_for_load_state("load")
            dom = page.evaluate(r"""() => ({
                math: document.querySelectorAll('.math').length,
                typeset: document.querySelectorAll('mjx-container').length,
                errors: document.querySelectorAll('mjx-merror').length,
                raw: (() => {  // the prose after typesetting, code and outputs left out
                    const a = document.querySelector('article').cloneNode(true);
                    a.querySelectorAll('pre, code, .cell_output, mjx-container').forEach(e => e.remove());
                    return (a.textContent.match(/\$+[^$]{0,40}/g) || []).slice(0, 3); })(),
                images: Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0,
                                                             alt: i.alt}))})""")
            page.screenshot(path=str(tmp_path / f"{path.stem}.png"))
            name = path.name
            assert dom["typeset"] >= dom["math"], f"{name}: {dom['math']} formulas, {dom['typeset']} typeset"
            assert dom["errors"] == 0, f"{name}: {dom['errors']} MathJax errors"
            assert not dom["raw"], f"{name}: TeX left untypeset: {dom['raw']}"
            for img in dom["images"]:
                assert img["ok"], f"{name}: image did not load: {img['src']}"
                assert img["alt"].strip(), f"{name}: image without alt: {img['src']}"
            assert not problems, f"{name}: " + "; ".join(problems)
        browser.close()
    print(f"screenshots: {tmp_path}")
