"""The static leaderboard page in a real headless browser (Debian's Chromium driven by Selenium)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from harness.report.build import build
from harness.results import write_results
from tests.report.test_findings import FINDING, HELIX_CURVES, with_finding
from tests.report.test_leaderboard import HOSTILE, PNG, results_dir  # noqa: F401  (fixture)

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
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_argument("--window-size=1280,900")  # a laptop's width
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def model_column(table) -> list[str]:
    return [
        row.find_elements("tag name", "td")[0].text for row in table.find_elements("css selector", "tbody tr:not(.reference)")
    ]


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
    images = table.find_elements(By.TAG_NAME, "img")  # the hostile name is text, not markup: the only images are thumbnails
    assert [img.get_attribute("class") for img in images] == ["thumb"] and "/assets/weekday_circle/" in images[0].get_attribute(
        "src"
    )
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

    link = table.find_element(By.CSS_SELECTOR, "a[title='circle.png']")
    assert "/assets/weekday_circle/" in link.get_attribute("href") and link.get_attribute("href").endswith("/circle.png")
    assert browser.title == "probe-harness leaderboards"  # no script from a results file ran
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_page_survives_non_finite_numbers_and_prototype_names(browser, tmp_path):
    """NaN and Infinity would make JSON.parse throw and leave the page empty; `constructor` is no metric."""
    from selenium.webdriver.common.by import By

    from tests.report.test_leaderboard import fake_results
    from tests.report.test_leaderboard_security import write_raw

    results = tmp_path / "results"
    headline = ["accuracy", "constructor", "__proto__"]
    write_raw(results / "fine" / "weekday_circle.json", fake_results("fine", 0.5, headline=headline))
    values = {"nan": float("nan"), "inf": float("inf"), "huge": 1e308}
    for slug in values:
        write_raw(results / slug / "weekday_circle.json", fake_results(slug, 0.1, headline=headline))
    out = tmp_path / "leaderboards"
    build(results, out)
    # a results file with such numbers is refused (tests/report/test_leaderboard_security.py); a board kept from
    # an earlier build, or handed over in a pull request, can still carry them
    board = json.loads((out / "weekday_circle.json").read_text())
    for row in board["boards"][0]["rows"]:
        if row["model"] in values:
            row["metrics"]["accuracy"]["value"] = values[row["model"]]
    board["boards"][0]["reference"]["metrics"]["paper-model"] = {"accuracy": float("nan"), "constructor": float("inf")}
    (out / "weekday_circle.json").write_text(json.dumps(board))
    (tmp_path / "none").mkdir()
    build(tmp_path / "none", out)
    browser.get((out / "index.html").as_uri())
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    [table] = browser.find_elements(By.CSS_SELECTOR, "section#task-weekday_circle table")
    assert model_column(table)[0] == "fine"
    cells = {
        row.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in row.find_elements(By.TAG_NAME, "td")[1:4]]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr:not(.reference)")
    }
    assert cells["fine"][1:] == ["-", "-"] and cells["fine"][0].startswith("0.500")
    assert all(cells[m] == ["-", "-", "-"] for m in ("nan", "inf", "huge"))
    table.find_elements(By.TAG_NAME, "th")[1].click()  # sorting a column of missing values works too
    assert set(model_column(table)) == {"fine", "nan", "inf", "huge"}
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_page_links_only_into_assets(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from harness.report.page import render_page

    row = {
        "model": "m",
        "date": "2026-01-01",
        "metrics": {},
        "artifacts": ["javascript:document.title='pwned'", "https://example.com/x.png", "assets/../../x.png", "assets/t/ok.png"],
    }
    task = {
        "task": "t",
        "description": "",
        "paper": "",
        "boards": [
            {
                "task_version": "1",
                "config_hash": "h",
                "config": {},
                "headline_metrics": ["accuracy"],
                "reference": None,
                "rows": [row],
            }
        ],
    }
    page = tmp_path / "index.html"
    page.write_text(
        render_page({"tasks": [{"task": "t", "chart": "javascript:alert(1)"}]}, [task], {"models": ["m"], "tasks": []})
    )
    browser.get(page.as_uri())
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "section#task-t a")]
    assert len(links) == 1 and links[0].endswith("/assets/t/ok.png")
    images = [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "section#task-t img")]
    assert len(images) == 1 and images[0].endswith("/assets/t/ok.png")  # no chart from a javascript: path


def findings_results(root):
    """Three tasks, four models: a finding that holds, one that does not, one not declared, a run missing, a hostile name."""
    helix = {
        "claim": "a helix fits better than a line " + HOSTILE,
        "paper_verdict": "holds on GPT-J, Pythia 6.9B, Llama 3.1 8B",
        "facets": [
            {"kind": "representation", "effect": "helix_r2_heldout", "control": "linear_r2_heldout"},
            {"kind": "causal", "effect": "linear_r2_heldout", "control": 0.5, "claim": HOSTILE},
        ],
    }
    runs = [
        ("a", "weekday_circle", with_finding("org/model-a", (0.9, 0.85, 0.95), (0.3, 0.2, 0.4))),
        (
            "b",
            "weekday_circle",
            with_finding("org/model-b", (0.5, 0.3, 0.7), (0.3, 0.2, 0.4), artifacts=["weekday_circle/circle.png"]),
        ),
        ("h", "weekday_circle", with_finding(HOSTILE, (0.6, 0.5, 0.7), (0.3, 0.2, 0.4), artifacts=["weekday_circle/circle.png"])),
        (
            "a",
            "month_circle",
            with_finding(
                "org/model-a", (0.9, 0.8, 1.0), (0.1, 0.0, 0.2), task="month_circle", finding=None, config={"template": "code"}
            ),
        ),
        (
            "a",
            "month_circle-paper",
            with_finding("org/model-a", (0.9, 0.8, 1.0), (0.1, 0.0, 0.2), task="month_circle", finding=None),
        ),
        (
            "c",
            "number_helix",
            with_finding(
                "org/model-c", (0.9, 0.8, 1.0), (0.1, 0.0, 0.2), task="number_helix", finding=helix, curves=HELIX_CURVES
            ),
        ),
    ]
    helix_run = runs[-1][2]
    helix_run.metrics["helix_r2_heldout"], helix_run.metrics["linear_r2_heldout"] = (
        helix_run.metrics["probe_r2"],
        helix_run.metrics["probe_r2_scrambled_order"],
    )
    for slug, name, results in runs:
        folder = root / slug / name
        if results.artifacts:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "circle.png").write_bytes(PNG)
        write_results(root / slug / f"{name}.json", results)


def test_findings_matrix_charts_and_thumbnails(browser, tmp_path):
    from selenium.webdriver.common.by import By

    results = tmp_path / "results"
    findings_results(results)
    out = tmp_path / "leaderboards"
    build(results, out)
    browser.get((out / "index.html").as_uri())
    browser.save_screenshot(str(tmp_path / "leaderboard.png"))  # what a visitor sees first, at 1280 px
    assert (tmp_path / "leaderboard.png").read_bytes().startswith(b"\x89PNG")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    findings = json.loads((out / "findings.json").read_text())
    models = ["org/model-a", "org/model-b", "org/model-c", HOSTILE]
    assert findings["models"] == sorted(models)

    matrix = browser.find_element(By.ID, "findings-matrix")
    header = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "thead th")]
    assert header == ["task", *sorted(models), "paper's verdict"]  # one column per model present, the hostile name as text
    rows = matrix.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.get_attribute("data-task") for r in rows] == ["month_circle", "number_helix", "weekday_circle"]
    for row, entry in zip(rows, findings["tasks"]):
        cells = row.find_elements(By.TAG_NAME, "td")
        assert len(cells) == len(models) + 1
        shown = [c.find_element(By.CLASS_NAME, "verdict").text for c in cells[:-1]]
        assert shown == [c["verdict"] for c in entry["cells"]]
        assert cells[-1].text == (entry["paper_verdict"] or "")
    weekday = {c.get_attribute("data-model"): c for c in rows[2].find_elements(By.TAG_NAME, "td")[:-1]}
    assert weekday["org/model-a"].text.splitlines() == ["holds", "0.900 [0.850, 0.950]"]
    assert weekday["org/model-b"].text.splitlines()[0] == "does not hold"
    assert weekday["org/model-c"].text == "not run"
    helix = {c.get_attribute("data-model"): c for c in rows[1].find_elements(By.TAG_NAME, "td")[:-1]}[
        "org/model-c"
    ]  # org/model-c: the representation holds, the causal facet does not
    assert helix.text.splitlines() == [
        "representation only",
        "representation: holds 0.900 [0.800, 1.000]",
        "causal: does not hold 0.100 [0.000, 0.200]",
    ]
    facet_claims = [div.text for div in rows[1].find_elements(By.CSS_SELECTOR, "th .claim")]
    assert (
        "representation: helix_r2_heldout vs linear_r2_heldout" in facet_claims
        and "causal: linear_r2_heldout vs 0.5" in facet_claims
    )
    assert "not above probe_r2_scrambled_order" in weekday["org/model-b"].get_attribute("title")
    assert rows[2].find_elements(By.TAG_NAME, "td")[-1].text == FINDING["paper_verdict"]
    month_cells = {
        c.get_attribute("data-model"): c.find_element(By.CLASS_NAME, "verdict").text
        for c in rows[0].find_elements(By.TAG_NAME, "td")[:-1]
    }
    assert month_cells == {HOSTILE: "not run", "org/model-a": "not declared", "org/model-b": "not run", "org/model-c": "not run"}

    images = browser.find_elements(By.TAG_NAME, "img")
    sources = [img.get_attribute("src") for img in images]
    assert any(s.endswith("/assets/charts/weekday_circle-layers.png") for s in sources)
    assert any(s.endswith("/assets/charts/number_helix-layers.png") for s in sources)
    caption = browser.find_element(By.CSS_SELECTOR, "#task-weekday_circle figcaption").text
    assert "probe_r2 solid, probe_r2_scrambled_order dashed" in caption
    assert sum("/assets/weekday_circle/" in s for s in sources) == 2  # the two runs' thumbnails
    for img in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img), img.get_attribute(
            "src"
        )
    thumb = browser.find_element(By.CSS_SELECTOR, "img.thumb")
    assert thumb.find_element(By.XPATH, "..").get_attribute("href") == thumb.get_attribute("src")  # opens full size

    month = browser.find_element(By.ID, "task-month_circle")
    options = [li.text for li in month.find_elements(By.CSS_SELECTOR, "ul.options li")]
    assert sorted(options) == ['template = "code"', 'template = "paper"']  # what sets each board apart
    disclosure = month.find_element(By.TAG_NAME, "details")
    assert not disclosure.find_element(By.TAG_NAME, "pre").is_displayed()
    disclosure.find_element(By.TAG_NAME, "summary").click()
    assert json.loads(disclosure.find_element(By.TAG_NAME, "pre").text)["template"] in ("code", "paper")

    width = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], width  # no horizontal scrolling of the whole page at 1280 px
    assert not browser.find_elements(
        By.CSS_SELECTOR, "#findings-matrix img, table.board td:first-child img"
    )  # names and claims are text
    assert HOSTILE in rows[1].find_element(By.TAG_NAME, "th").text
    assert browser.title == "probe-harness leaderboards"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
