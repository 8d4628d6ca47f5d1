"""``GET /docs``: Swagger UI from a CDN when the browser can reach one, and readable without
it: the page itself lists every route, the columns, the classes and an example call."""

from __future__ import annotations

import html
from typing import Any

from serving.card import ModelCard
from serving.codec import dumps
from serving.routes import ROUTES

__all__ = ["docs_page"]


def docs_page(card: ModelCard, *, example: dict[str, Any]) -> bytes:
    rows = "".join(
        f"<tr><td>{r.method}</td><td><code>{html.escape(r.path)}</code></td>"
        f"<td>{html.escape(r.summary)}</td></tr>"
        for r in ROUTES
    )
    call = (
        "curl -s -X POST http://HOST:PORT/invocations -H 'Content-Type: application/json' "
        f"-d '{dumps(example).decode()}'"
    )
    title = html.escape(f"{card.model_name} v{card.model_version}")
    answers = (
        "A regressor: predicted values"
        if card.regression
        else f"Classes: <code>{html.escape(str(list(card.classes)))}</code>"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body>
<div id="swagger-ui"></div>
<section id="offline" style="font-family:sans-serif;max-width:60em;margin:2em">
<h1>{title}</h1>
<p>Machine-readable contract: <a href="/openapi.json">/openapi.json</a>.
Columns: <code>{html.escape(str(list(card.feature_names)))}</code>.
{answers}.</p>
<table border="1" cellpadding="4"><tr><th>method</th><th>path</th><th>what</th></tr>{rows}</table>
<h2>Example</h2><pre style="white-space:pre-wrap">{html.escape(call)}</pre>
<p>Answer: <code>{{"predictions": [...]}}</code>; errors:
<code>{{"error_code": "...", "message": "..."}}</code>.</p></section>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>if (window.SwaggerUIBundle) {{ SwaggerUIBundle({{url: "/openapi.json",
dom_id: "#swagger-ui"}}); }}</script>
</body></html>
""".encode()
