"""MLflow's own server app, opening on its model-training view: ``mlflow ui --app-name isim``
(what ``isim ui`` starts).

MLflow 3's UI picks its view (GenAI or model training) per browser, from the ``workflowType``
of the address or, without one, from local storage, GenAI by default; the experiment's
``mlflow.experimentKind`` tag does not decide it. This app serves MLflow's page with one line
that makes model training a fresh browser's default; a browser that has chosen keeps its choice.
Every other request goes to MLflow's app unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app as mlflow_app
from mlflow.server.handlers import _add_static_prefix

KEY = "mlflow.workflowType_v1"  # MLflow's local-storage key of the view (JSON, versioned)
DEFAULT = f"<script>localStorage.getItem('{KEY}')||localStorage.setItem('{KEY}','\"machine_learning\"')</script>"


def index_html() -> bytes:
    page = (Path(flask_app.static_folder or "") / "index.html").read_text()
    return page.replace("<head>", "<head>" + DEFAULT, 1).encode()


async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == _add_static_prefix("/"):
        body = index_html()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": body})
        return
    await mlflow_app(scope, receive, send)


def create_app() -> Any:
    """The app factory ``--app-name isim`` names (a plain function: MLflow starts it as a factory)."""
    return serve
