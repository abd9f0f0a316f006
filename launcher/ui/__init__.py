"""``launch ui``: a web dashboard over the storage the CLI reads (any backend).

- :mod:`~launcher.ui.views`: what each page shows, read-only, as JSON-ready dicts (no web
  framework; the benchmark times these)
- :mod:`~launcher.ui.server`: the Starlette app (token or loopback guard, ETags, downloads,
  stop) and serving it with uvicorn; imported only by ``launch ui`` (the ``ui`` extra)
- ``static/``: the page (plain HTML, CSS and JS, no build step) and uPlot, vendored from its
  npm release with its licence
"""
