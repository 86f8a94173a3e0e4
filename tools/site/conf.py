"""Sphinx configuration of the course website (built by tools/site/build.py, not by hand).

The source folder is a staging copy that build.py lays out (home page, lectures, released
assignments, API pages, ``_static``); build.py copies this file and alt_text.py into it. Nothing here
reaches the network: notebooks are not executed, MathJax is served from ``_static/mathjax``
(copied from a pip package by build.py), and the ipywidgets CDN scripts are switched off
because build.py has already replaced every widget by its last picture.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # alt_text.py, the extension beside this file

project = "Robust and Trustworthy ML, from an optimization lens"
author = "the course staff"
copyright = "the course staff"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "alt_text",
]

# the stored outputs are the page: never execute (no kernel, no data download, no network)
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True   # "... as $$x = y$$ shows": display math inside a paragraph, as in JupyterLab
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

# MathJax 3 from the local copy (_static/mathjax), never a CDN
mathjax_path = "mathjax/tex-chtml.js"

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "Robust and Trustworthy ML"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_context = {"default_mode": "light"}   # pydata-sphinx-theme: no "invalid theme mode" console error
exclude_patterns = ["_build", "**.ipynb_checkpoints"]


def _unlink_problematic(app, doctree, docname):
    """Docstring markup that docutils cannot parse (a lone ``*`` as in ``p_A*``) becomes a
    "problematic" node linking to an error message that the HTML leaves out: keep the text,
    drop the dangling link."""
    from docutils import nodes

    for node in doctree.findall(nodes.problematic):
        node.attributes.pop("refid", None)


def setup(app):
    app.connect("doctree-resolved", _unlink_problematic)
