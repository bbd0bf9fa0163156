"""Helpers for the 微调实战 workbook: everything the notebooks call lives here.

Client side: config, data, validate, tokens, pricing, workflow, evaluation, plots, widgets.
Server side: the `localapi` subpackage (the offline OpenAI-compatible backend), which the
client side only ever reaches over HTTP through the official `openai` SDK.
"""

__version__ = "0.1.0"
