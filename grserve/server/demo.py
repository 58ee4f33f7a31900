"""The demo page at `/`: static HTML, JavaScript and CSS shipped in the package (server/static/, no build step,
nothing fetched from elsewhere). The page is a client of the public API like any other: it lists the models
(/v1/models), searches the catalog (/v1/catalog/search), asks for recommendations (/v1/recommend) and reads
/metrics for its live panel, so what it shows is what the API answers."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
ASSETS = "/demo"  # the page's script and style sheet, under a prefix of their own: no clash with API routes


def add_demo(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="demo")

    @app.get("/", response_class=HTMLResponse, tags=["demo"],
             responses={200: {"description": "the demo page (HTML)", "content": {"text/html": {}}}})
    async def page() -> FileResponse:
        """The demo page: search the catalog, build a history, see its recommendations and the server's load."""
        return FileResponse(STATIC / "index.html", media_type="text/html")
