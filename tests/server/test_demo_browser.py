"""The demo page in a real browser: headless Chromium (Debian's chromium and chromium-driver, through selenium)
against a real `grserve serve` of the embedded model. It searches the catalog, adds three items to the history,
and checks that the recommendations shown are the API's answer to the very request the page made and that its
history is the three items clicked; then switches the beam width and excludes an item, checks the live panel
against /metrics, and takes a screenshot.

Without a browser the test skips and says why; GRSERVE_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import grserve_serve

# Without these Chromium reaches for the network (updates, sync, QUIC probes) and, with none, hangs.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900"]
WAIT_S = 60  # a bound for slow machines, never a speed expectation
E2E = "grserve:e2e_request_latency_seconds"


def browser_or_skip() -> tuple[str, str]:
    """Chromium's and chromedriver's paths, with selenium importable; skips (fails under CI's variable) if not."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
        missing = None
    except ImportError:
        missing = "selenium (pip install -e '.[dev]')"
    if not chromium or not driver:
        missing = "chromium and chromedriver (apt-get install -y chromium chromium-driver)"
    if missing:
        reason = f"the browser test needs {missing}"
        if os.environ.get("GRSERVE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GRSERVE_REQUIRE_BROWSER=1: {reason}")
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`grserve serve` on the embedded MovieLens-100K model, its catalog state in a fresh directory."""
    with grserve_serve("--state-dir", str(tmp_path_factory.mktemp("demo-state")),
                       "--default-timeout-ms", "30000") as url:
        yield url


@pytest.fixture(scope="module")
def page():
    chromium, driver_path = browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="grserve-chromium-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # selenium must not look for drivers online
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def shown_request(driver) -> dict | None:
    """The request the recommendations on the page answer, once they are shown (None while one is pending)."""
    table = driver.find_element("id", "recs")
    if table.get_attribute("data-state") != "done":
        return None
    return json.loads(table.get_attribute("data-request"))


def shown_items(driver) -> list[tuple[str, float, str, str]]:
    rows = driver.find_elements("css selector", "#recs tbody tr")
    return [(r.get_attribute("data-item-id"), float(r.get_attribute("data-score")),
             r.find_element("css selector", ".title").text, r.find_element("css selector", ".sid").text)
            for r in rows]


def assert_shows_the_api_answer(driver, url: str, body: dict) -> list[str]:
    answer = httpx.post(url + "/v1/recommend", json=body, timeout=60).json()
    items = shown_items(driver)
    assert [i[0] for i in items] == [a["item_id"] for a in answer["items"]]
    assert [i[1] for i in items] == pytest.approx([a["score"] for a in answer["items"]], abs=1e-5)
    assert [i[2] for i in items] == [a["title"] or "(no title)" for a in answer["items"]]
    assert [i[3] for i in items] == ["[" + ", ".join(map(str, a["semantic_id"])) + "]" for a in answer["items"]]
    assert len(items) == body["top_n"]
    return [i[0] for i in items]


def search_and_add(driver, url: str, query: str) -> str:
    box = driver.find_element("id", "search")
    box.clear()
    box.send_keys(query)
    results = driver.find_element("id", "search-results")
    wait_for(driver, lambda d: results.get_attribute("data-query") == query, f"search results for {query!r}")
    rows = driver.find_elements("css selector", "#search-results li")
    api = httpx.get(url + "/v1/catalog/search", params={"q": query, "limit": 20}).json()
    assert [r.get_attribute("data-item-id") for r in rows] == [i["item_id"] for i in api["data"]] != []
    rows[0].click()
    return api["data"][0]["item_id"]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets, as its documentation defines it."""
    count = buckets[-1][1]
    rank = q * count
    for i, (le, c) in enumerate(buckets):
        if c >= rank:
            if le == float("inf"):
                return buckets[i - 1][0]
            lower, below = (buckets[i - 1] if i else (0.0, 0.0))
            return le if c == below else lower + (le - lower) * (rank - below) / (c - below)
    raise AssertionError("no bucket holds the rank")


def assert_live_panel_reads_metrics(driver, url: str) -> None:
    text = httpx.get(url + "/metrics").text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == E2E]
    answered = next(s.value for s in family.samples if s.name == E2E + "_count")
    # the page polls /metrics every 2 s; no request is made meanwhile, so the count stands still
    wait_for(driver, lambda d: d.find_element("id", "live-total").text == str(int(answered)), "live panel's count")
    buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name == E2E + "_bucket")
    for q in (0.5, 0.99):
        got = driver.execute_script(f"return GRDemo.quantile({q}, GRDemo.buckets(GRDemo.parseMetrics(arguments[0]), "
                                    f"arguments[1]))", text, E2E)
        assert got == pytest.approx(histogram_quantile(q, buckets), rel=1e-9)


def assert_rendered(png_path) -> None:
    """A real render, not a blank page: the right size, and many colours (text, chips, table)."""
    import matplotlib.image
    image = matplotlib.image.imread(png_path)
    assert image.shape[0] >= 600 and image.shape[1] >= 1200
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100, f"{len(colours)} colours: the page did not render"


def test_search_history_and_answer_as_the_api_says(page, server, tmp_path):  # no browser: skip before serving
    from selenium.webdriver.support.ui import Select
    page.get(server + "/")
    wait_for(page, lambda d: shown_request(d) is not None, "the model's prior shown")
    assert "catalog v0" in page.find_element("id", "model-info").text
    assert shown_request(page)["history"] == []

    added = [search_and_add(page, server, q) for q in ("star wars", "toy story", "godfather")]
    wait_for(page, lambda d: (shown_request(d) or {}).get("history") == added, "the answer for three items")
    body = shown_request(page)
    assert body["beam_width"] == 64 and body["exclude_history"] is True and "model" not in body
    shown = assert_shows_the_api_answer(page, server, body)
    assert not set(shown) & set(added)  # exclude history
    chips = page.find_elements("css selector", "#history li")
    assert [c.get_attribute("data-item-id") for c in chips] == added

    assert_live_panel_reads_metrics(page, server)
    shot = tmp_path / "demo.png"
    assert page.save_screenshot(str(shot))
    assert_rendered(shot)

    Select(page.find_element("id", "beam-width")).select_by_value("16")
    # The new width re-renders the table: its rows are clicked only once they are that answer's (a row found
    # before it was replaced went stale under a click once).
    wait_for(page, lambda d: (shown_request(d) or {}).get("beam_width") == 16, "the answer with beam width 16")
    first = page.find_element("css selector", "#recs tbody tr")
    excluded = first.get_attribute("data-item-id")
    first.find_element("css selector", "button[data-action=exclude]").click()
    wait_for(page, lambda d: (shown_request(d) or {}).get("exclude") == [excluded]
             and shown_request(d)["beam_width"] == 16, "the answer with beam width 16 and one exclusion")
    body = shown_request(page)
    assert body["history"] == added
    assert excluded not in assert_shows_the_api_answer(page, server, body)
