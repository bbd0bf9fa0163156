"""The fine-tuning dashboard: a static page (vanilla JS, an SVG chart) served at `/`, reading only the `/v1` API.

The page and its assets carry no data and need no key; every number on the page comes from the same
HTTP API the SDK uses, called by the browser with the bearer key the user types in (kept in sessionStorage).
"""
