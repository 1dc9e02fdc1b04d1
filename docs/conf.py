"""Sphinx configuration: numpydoc API reference, an offline sphinx-gallery, MyST pages.

The command-line reference (cli.rst) is rendered by sphinx-argparse from
:func:`sklearn_cae.cli.build_parser`; the front page's method diagram is redrawn by
``method_diagram.py`` when a build starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The gallery runs offline: never download weights or data, and read MedMNIST from the
# shared data folder next to the checkout unless MEDMNIST_ROOT says otherwise.
os.environ.setdefault("SKLEARN_CAE_OFFLINE", "1")
_shared_medmnist = ROOT.parent / "shared" / "data" / "medmnist"
if not os.environ.get("MEDMNIST_ROOT") and _shared_medmnist.is_dir():
    os.environ["MEDMNIST_ROOT"] = str(_shared_medmnist)
os.environ.setdefault("MPLBACKEND", "Agg")

import sklearn_cae  # noqa: E402

project = "sklearn-cae"
author = "The sklearn-cae developers"
copyright = "2026, The sklearn-cae developers"
release = sklearn_cae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinxarg.ext",  # the command-line reference in cli.rst, from the argparse parser
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb"]
templates_path = ["_templates"]
html_static_path = ["_static"]

# API reference: one page per public object, from the numpydoc docstrings.
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    # scikit-learn's metadata-routing setters (LabelledOnly's fit takes sample_weight):
    # their docstrings link into scikit-learn's own glossary, which is not built here.
    "exclude-members": "set_fit_request,set_score_request,set_predict_request",
}
autodoc_typehints = "none"  # numpydoc's Parameters sections already give the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "dollarmath"]

# No intersphinx: the build must work without a network.

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("sklearn_cae",),
    "backreferences_dir": "generated/backreferences",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
}

html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-cae {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "getting_started": []}
html_show_sourcelink = False


def _write_method_diagram(app) -> None:
    """Redraw the front page's method diagram from the code's current defaults."""
    from method_diagram import write

    write()


def setup(app) -> None:
    # docs/ is importable for method_diagram.py; the diagram is drawn when a build
    # starts (not when this file is imported), before any page is read.
    sys.path.insert(0, str(Path(__file__).parent))
    app.connect("builder-inited", _write_method_diagram)
