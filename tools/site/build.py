"""Build the course website: ``python tools/site/build.py [--out site]`` (what ``make site`` runs).

Lays out a Sphinx source folder in a temporary directory, then runs Sphinx (MyST-NB for the
notebooks, autodoc for the API) into ``--out``. Offline and without executing anything:

- every ``lectures/*.ipynb`` (so new lectures appear without editing this file), with its
  stored outputs; each ipywidgets output becomes a short note and the widget's last picture,
  read from the widget state saved in the notebook;
- every released assignment ``assignments/<name>/*.ipynb`` (nbgrader's student version;
  ``solutions/`` is never read);
- one API page per ``course_lib`` module, from its docstrings;
- a home page: what the course is, the lecture arc, the README's quick-start commands;
- MathJax 3 copied from the ``django-static-mathjax`` wheel (pure static files, no Django).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's course_lib, whatever else is installed
HERE = Path(__file__).resolve().parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = ("*Interactive widget: its controls need a live Python kernel. Below is the picture "
               "it showed when the notebook was last run; open the notebook in JupyterLab "
               "(`make lab`) to move the controls.*")
# the parts of MathJax 3's es5 bundle that tex-chtml.js loads (fonts, lazy TeX extensions, menu)
MATHJAX_PARTS = ["tex-chtml.js", "input", "output/chtml", "ui", "a11y", "sre", "adaptors"]


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first level-1 heading of the notebook's markdown, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if match:
                return match.group(1).strip()
    return fallback


def notebook_summary(nb: nbformat.NotebookNode) -> str:
    """The first paragraph after the title heading (one line), or ''."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^#\s+", cell.source, flags=re.M):
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", cell.source) if p.strip()]
            rest = [p for p in paragraphs if not p.startswith("#")]
            return " ".join(rest[0].split()) if rest else ""
    return ""


def _widget_images(state: dict, model_id: str) -> list[str]:
    """Base64 PNGs of the Image models under ``model_id`` in the saved widget state, in order."""
    model = state.get(model_id)
    if model is None:
        return []
    if model.get("model_name") == "ImageModel":
        return [b["data"] for b in model.get("buffers", [])
                if b.get("path") == ["value"] and b.get("encoding", "base64") == "base64"]
    found = []
    children = model.get("state", {}).get("children", [])
    for child in children:
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            found += _widget_images(state, child[len("IPY_MODEL_"):])
    return found


def freeze_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace each widget output by a note and its last picture; drop the widget state.

    The picture is left out when the notebook already shows the same image elsewhere.
    Returns the number of widget outputs replaced. Without this the page would show an
    empty box, or load the ipywidgets JavaScript from a CDN.
    """
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    # a lecture that already shows the widget's picture (Image(explorer.image.value)) gets the note only
    shown = {"".join(out["data"]["image/png"].split()) for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) if "image/png" in out.get("data", {})}
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(out)
                continue
            replaced += 1
            outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": WIDGET_NOTE}))
            for png in _widget_images(state, view.get("model_id", "")):
                if "".join(png.split()) in shown:
                    continue
                outputs.append(nbformat.v4.new_output(
                    "display_data", data={"image/png": png, "text/plain": "<the widget's last picture>"}))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return replaced


DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", flags=re.S)


def one_line_display_math(markdown: str) -> str:
    """Each ``$$...$$`` on one line: TeX reads a newline as a space, but Markdown would read a
    continuation line starting with ``+``, ``-`` or ``1.`` as a list item and break the formula
    (JupyterLab takes the math out before parsing the Markdown, MyST does not)."""
    return DISPLAY_MATH.sub(lambda m: "$$" + " ".join(m.group(1).split("\n")) + "$$", markdown)


def stage_notebook(src: Path, dest: Path) -> nbformat.NotebookNode:
    """Copy one notebook into the staging folder, widgets frozen, display math on one line."""
    nb = nbformat.read(src, as_version=4)
    freeze_widgets(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = one_line_display_math(cell.source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return nb


def quick_start(readme: Path) -> str:
    """The first fenced code block of the README's '## Quick start' section."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\s*$(.*?)^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    if not match:
        raise SystemExit("README.md has no '## Quick start' section with a code block")
    return f"```{match.group(2) or 'bash'}\n{match.group(3)}```"


def api_modules() -> list[str]:
    """Every public ``course_lib`` module (no leading underscore, no ``__main__``), sorted.

    Each one is imported here, so a module that fails to import stops the build with its
    traceback instead of leaving an empty API page.
    """
    import course_lib

    names = ["course_lib"]
    for info in pkgutil.walk_packages(course_lib.__path__, prefix="course_lib."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            continue
        names.append(info.name)
    for name in names:
        importlib.import_module(name)
    return sorted(names)


def write_api(src: Path) -> list[str]:
    """One page per module under ``api/``, and ``api/index.md`` listing them."""
    modules = api_modules()
    api = src / "api"
    api.mkdir(parents=True)
    for name in modules:
        (api / f"{name}.md").write_text(
            f"# `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n```\n", encoding="utf-8")
    toc = "\n".join(modules)
    (api / "index.md").write_text(
        "# The `course_lib` API\n\nGenerated from the docstrings: shapes, value ranges and errors "
        "as the library states them.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n", encoding="utf-8")
    return modules


def write_home(src: Path, lectures: list[tuple[str, str, str]], assignments: list[tuple[str, str]]) -> None:
    """The home page: the course in a paragraph, the lecture arc, how to start, the toctrees."""
    template = (HERE / "home.md").read_text(encoding="utf-8")
    arc = "\n".join(f"{i}. [{title}]({doc}.ipynb): {summary}" if summary else f"{i}. [{title}]({doc}.ipynb)"
                    for i, (doc, title, summary) in enumerate(lectures, start=1))
    tocs = (
        "```{toctree}\n:caption: Lectures\n:hidden:\n:maxdepth: 1\n\n"
        + "\n".join(doc for doc, _, _ in lectures) + "\n```\n\n"
        "```{toctree}\n:caption: Assignments\n:hidden:\n:maxdepth: 1\n\n"
        + "\n".join(doc for doc, _ in assignments) + "\n```\n\n"
        "```{toctree}\n:caption: Reference\n:hidden:\n:maxdepth: 1\n\napi/index\n```\n")
    homework = "\n".join(f"- [{title}]({doc}.ipynb)" for doc, title in assignments)
    page = template.format(arc=arc, quick_start=quick_start(ROOT / "README.md"), assignments=homework)
    (src / "index.md").write_text(page + "\n" + tocs, encoding="utf-8")


def copy_mathjax(static: Path) -> None:
    """Copy MathJax 3 (tex-chtml and what it loads) from the installed wheel into ``_static``."""
    import mathjax  # the django-static-mathjax wheel: MathJax's files under mathjax/static/

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise SystemExit(f"MathJax not found at {es5}; run `pip install -e .[test]`")
    dest = static / "mathjax"
    for part in MATHJAX_PARTS:
        if (es5 / part).is_dir():
            shutil.copytree(es5 / part, dest / part)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(es5 / part, dest / part)
    shutil.copy2(es5.parent / "LICENSE", dest / "LICENSE")


def _course_order(path: Path) -> list:
    """Sort key in course order: ``ps2_...`` before ``ps10_...`` (the numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def stage(src: Path) -> dict:
    """Lay out the whole Sphinx source folder under ``src``; return what went in."""
    src.mkdir(parents=True, exist_ok=True)
    lectures = []
    for path in sorted((ROOT / "lectures").glob("*.ipynb")):
        nb = stage_notebook(path, src / "lectures" / path.name)
        lectures.append((f"lectures/{path.stem}", notebook_title(nb, path.stem), notebook_summary(nb)))
    assignments = []
    for path in sorted((ROOT / "assignments").glob("*/*.ipynb"), key=_course_order):
        if ".ipynb_checkpoints" in path.parts:
            continue
        rel = path.relative_to(ROOT)
        nb = stage_notebook(path, src / rel)
        assignments.append((str(rel.with_suffix("")), f"{path.parent.name}: {notebook_title(nb, path.stem)}"))
    for name in ("conf.py", "alt_text.py"):   # the source folder is self-contained
        shutil.copy2(HERE / name, src / name)
    modules = write_api(src)
    write_home(src, lectures, assignments)
    copy_mathjax(src / "_static")
    (src / "_static" / "course.css").write_text((HERE / "course.css").read_text(encoding="utf-8"))
    return {"lectures": [d for d, _, _ in lectures], "assignments": [d for d, _ in assignments],
            "api": [f"api/{m}" for m in modules]}


def build(out: Path, quiet: bool = True) -> dict:
    """Stage and run Sphinx, then move the HTML into ``out`` (replaced); return the page lists.

    Sphinx writes into the temporary folder first: MyST-NB puts its extracted figures beside
    the output folder (``<out>/../jupyter_execute``), which must not land next to ``out``.
    """
    with tempfile.TemporaryDirectory(prefix="course-site-") as tmp:
        src, html = Path(tmp) / "src", Path(tmp) / "html"
        pages = stage(src)
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-d", str(Path(tmp) / "doctrees"),
               "-j", "auto", str(src), str(html)]
        if quiet:
            cmd.insert(3, "-q")
        subprocess.run(cmd, check=True, cwd=ROOT)
        (html / ".nojekyll").write_text("")  # GitHub Pages: serve _static/ as is
        (html / ".buildinfo").unlink(missing_ok=True)
        (html / "pages.json").write_text(json.dumps(pages, indent=1))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(html), str(out))
    return pages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "site", help="output folder (emptied first)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress and warnings")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pages = build(args.out.resolve(), quiet=not args.verbose)
    print(f"site: {len(pages['lectures'])} lectures, {len(pages['assignments'])} assignments, "
          f"{len(pages['api'])} API pages in {args.out} ({time.perf_counter() - start:.0f} s); "
          f"open {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
