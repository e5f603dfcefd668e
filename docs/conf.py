"""Sphinx configuration of the ft_kit docs site (used by docs/build.py: `sphinx-build -c docs docs/_src ...`).

Everything the pages load is served from the site itself: MathJax 3, require.js and the Jupyter widget
manager come from npm (docs/package.json) into docs/_src/_vendor; the theme ships its own icons and uses
system fonts. No page makes a request to another host.
"""
project = "ft_kit"
author = "ft_kit developers"
copyright = "2026 onwards, ft_kit developers"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_vendor", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "misc.highlighting_failure"]

# Notebooks are shown with the outputs saved in them; nothing is executed while building.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]
myst_heading_anchors = 3
myst_update_mathjax = False  # docs/_static/mathjax-config.js is the whole MathJax configuration

# MathJax 3 from npm (`mathjax` es5 build), served under _static/mathjax/.
mathjax_path = "mathjax/tex-chtml.js"
mathjax_config_path = "_static/mathjax-config.js"

# The widget manager renders widgets from the state saved in a notebook; require.js and
# @jupyter-widgets/html-manager come from npm, widgets-config.js points require.js at them.
nb_ipywidgets_js = {
    "require.min.js": {},
    "widgets-config.js": {},
    "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "_static/html-manager/", "data-jupyter-widgets-cdn-only": ""},
}

html_theme = "sphinx_book_theme"
html_title = "ft_kit"
html_static_path = ["_static", "_src/_vendor"]
html_css_files = ["custom.css"]
html_favicon = "_static/favicon.svg"
html_last_updated_fmt = None
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
