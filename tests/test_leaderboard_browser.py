"""The static leaderboard page in a real headless browser (Debian's Chromium driven by Selenium)."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.leaderboard import build
from tests.test_leaderboard import HOSTILE, results_dir  # noqa: F401  (fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def model_column(table) -> list[str]:
    return [row.find_elements("tag name", "td")[0].text for row in table.find_elements("css selector", "tbody tr:not(.reference)")]


def test_page_loads_sorts_and_escapes(browser, results_dir, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    out = tmp_path / "leaderboards"
    build(results_dir, out)
    browser.get((out / "index.html").as_uri())
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    assert browser.title == "probe-harness leaderboards"

    tables = browser.find_elements(By.CSS_SELECTOR, "section#task-weekday_circle table")
    assert len(tables) == 3  # version 2.0, version 1.0 with two configs
    table = next(t for t in tables if len(model_column(t)) == 3)
    assert model_column(table) == ["org/model-b", HOSTILE, "org/model-a"]
    assert not table.find_elements(By.TAG_NAME, "img")  # the hostile name is text, not markup
    reference = table.find_elements(By.CSS_SELECTOR, "tr.reference")
    assert reference and "paper: mistralai/Mistral-7B-v0.1" in reference[0].text and "0.633" in reference[0].text
    assert "[0.500, 0.700]" in table.text  # intervals shown

    header = table.find_elements(By.TAG_NAME, "th")
    header[1].click()  # accuracy, ascending
    assert model_column(table) == ["org/model-a", HOSTILE, "org/model-b"]
    header[1].click()  # descending
    assert model_column(table) == ["org/model-b", HOSTILE, "org/model-a"]
    header[0].click()  # model name, alphabetical
    assert model_column(table) == sorted(model_column(table))
    assert table.find_elements(By.CSS_SELECTOR, "tbody tr")[-1].get_attribute("class") == "reference"  # paper row stays last

    link = table.find_element(By.LINK_TEXT, "circle.png")
    assert "/assets/weekday_circle/" in link.get_attribute("href") and link.get_attribute("href").endswith("/circle.png")
    assert browser.title == "probe-harness leaderboards"  # no script from a results file ran
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_page_survives_non_finite_numbers_and_prototype_names(browser, tmp_path):
    """NaN and Infinity would make JSON.parse throw and leave the page empty; `constructor` is no metric."""
    from selenium.webdriver.common.by import By

    from tests.test_leaderboard import fake_results
    from tests.test_leaderboard_security import write_raw

    results = tmp_path / "results"
    headline = ["accuracy", "constructor", "__proto__"]
    write_raw(results / "fine" / "weekday_circle.json", fake_results("fine", 0.5, headline=headline))
    for slug, value in [("nan", float("nan")), ("inf", float("inf")), ("huge", 1e308)]:
        data = fake_results(slug, 0.1, headline=headline).model_dump(mode="python")
        data["metrics"]["accuracy"]["value"] = value
        data["reference"]["metrics"]["paper-model"] = {"accuracy": value, "constructor": value}
        write_raw(results / slug / "weekday_circle.json", data)
    out = tmp_path / "leaderboards"
    build(results, out)
    browser.get((out / "index.html").as_uri())
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    [table] = browser.find_elements(By.CSS_SELECTOR, "section#task-weekday_circle table")
    assert model_column(table)[0] == "fine"
    cells = {row.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in row.find_elements(By.TAG_NAME, "td")[1:4]]
             for row in table.find_elements(By.CSS_SELECTOR, "tbody tr:not(.reference)")}
    assert cells["fine"][1:] == ["-", "-"] and cells["fine"][0].startswith("0.500")
    assert all(cells[m] == ["-", "-", "-"] for m in ("nan", "inf", "huge"))
    table.find_elements(By.TAG_NAME, "th")[1].click()  # sorting a column of missing values works too
    assert set(model_column(table)) == {"fine", "nan", "inf", "huge"}
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_page_links_only_into_assets(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from harness.leaderboard_page import render_page

    row = {"model": "m", "date": "2026-01-01", "metrics": {},
           "artifacts": ["javascript:document.title='pwned'", "https://example.com/x.png", "assets/../../x.png", "assets/t/ok.png"]}
    task = {"task": "t", "description": "", "paper": "", "boards": [
        {"task_version": "1", "config_hash": "h", "config": {}, "headline_metrics": ["accuracy"], "reference": None, "rows": [row]}]}
    page = tmp_path / "index.html"
    page.write_text(render_page({"tasks": []}, [task]))
    browser.get(page.as_uri())
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "section#task-t a")]
    assert len(links) == 1 and links[0].endswith("/assets/t/ok.png")
