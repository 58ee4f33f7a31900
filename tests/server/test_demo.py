"""The demo page's route on a real uvicorn server: `/` and its assets load (open even where the API needs a key),
nothing on the page comes from another host, the package ships every static file, the OpenAPI spec lists `/`.
The page's behaviour in a browser: test_demo_browser.py."""
from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import httpx
import pytest

from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.server.demo import STATIC
from tests.conftest import make_bundle
from tests.server.conftest import running

ROOT = Path(__file__).resolve().parents[2]


class References(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


@pytest.fixture(scope="module")
def url():
    config = ServerConfig.of(max_beam_width=16, api_key="pub-key")
    with running(create_app(config, Recommender(make_bundle(num_items=40, seed=3), config.engine))) as base:
        yield base


def test_page_and_its_assets_load_without_the_api_key(url):
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = References()
    refs.feed(page.text)
    local = [u for u in refs.urls if not u.startswith("data:")]
    assert local, "the page loads its script and style sheet"
    for ref in local:
        assert ref.startswith("/") and not ref.startswith("//"), f"{ref}: not from this server"
        asset = httpx.get(url + ref)
        assert asset.status_code == 200, ref
        kind = {".js": "javascript", ".css": "text/css"}[PurePosixPath(ref).suffix]
        assert kind in asset.headers["content-type"], ref
        assert asset.content == (STATIC / PurePosixPath(ref).name).read_bytes()
    assert httpx.get(url + "/v1/models").status_code == 401  # while the API itself needs the key


def test_nothing_comes_from_another_host():
    """No CDN, font or analytics: the static files name no URL with a scheme or a protocol-relative one, and every
    fetch() of the script is of a path on this server."""
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert "@import" not in text and "<iframe" not in text, path.name
    script = (STATIC / "demo.js").read_text(encoding="utf-8")
    fetched = re.findall(r"\b(?:fetch|api)\(\s*([^,)]+)", script)
    assert fetched and all(re.match(r'["`]/', arg.strip()) or arg.strip() == "path" for arg in fetched), fetched


def test_the_package_ships_every_static_file():
    """Each file under server/static/ matches a package-data pattern of pyproject.toml (so a wheel holds it)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["grserve"]
    files = [p.relative_to(ROOT / "grserve").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"server/static/index.html", "server/static/demo.js", "server/static/demo.css"} <= set(files)
    for f in files:
        assert any(PurePosixPath(f).match(p) for p in patterns), f"{f}: in no package-data pattern {patterns}"


def test_openapi_lists_the_page(url):
    spec = httpx.get(url + "/openapi.json").json()
    assert "text/html" in spec["paths"]["/"]["get"]["responses"]["200"]["content"]
