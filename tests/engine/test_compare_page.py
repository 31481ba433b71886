"""The comparison page in a real headless Chromium (Debian chromium + chromedriver, which
.ci/run installs), served by the sidecar over the real engine: load, switch query, switch
configuration, screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.chorus_slice import write_slice_judgments
from support.stand_in import running

from esrank.evaluation.comparison import rankers
from esrank.serve import create_app


@pytest.fixture()
def pushed_runs(engine, slice_alias, tmp_path, run_tag):
    """Two evaluation runs of the slice in the engine, as `esrank evaluate --push` stores
    them: bm25 alone, then bm25 and bm25-title. Their ids (removed afterwards)."""
    import time

    from esrank.evaluation.runs import push_evaluation
    from esrank.judgments.lists import read_judgments
    from esrank.judgments.metrics import Evaluator
    from esrank.ranking.search import run_of, search_many

    evaluator = Evaluator(read_judgments(write_slice_judgments(tmp_path / "runs.csv")))
    ids = [f"{run_tag}-0", f"{run_tag}-1"]
    for i, (run_id, configs) in enumerate(zip(ids, (["bm25"], ["bm25", "bm25-title"]),
                                              strict=True)):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + i))
        for ranker in rankers(engine, "none", configs, 100):
            hits = search_many(engine, slice_alias, evaluator.queries, ranker, None, size=10)
            push_evaluation(engine, run_id, {"model": None, "feature_set": None,
                                             "judgments": "slice.csv", "timestamp": stamp},
                            ranker.label, evaluator.evaluate(
                                run_of(hits)),
                            hits, {})
    return ids


@pytest.fixture()
def page_url(engine, slice_alias, encoder, tmp_path, engine_settings):
    from esrank.serve.server import make_server

    settings = engine_settings(index=slice_alias, active_set="no-models-here",
                               judgments=write_slice_judgments(tmp_path / "j.csv"))
    with running(make_server(create_app(settings, encoder=encoder), "127.0.0.1", 0,
                             threads=4)) as port:
        yield f"http://127.0.0.1:{port}/compare"


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install Debian's chromium and chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP refusals show there
    b = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield b
    b.quit()


def test_load_switch_query_switch_configuration_screenshot(pushed_runs, page_url, browser,
                                                           tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(page_url)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

    # the metric per run: a point per (run, configuration), one line per configuration
    def points():
        return [(p.get_attribute("data-run"), p.get_attribute("data-series"),
                 p.find_element(By.TAG_NAME, "title").get_attribute("textContent"))
                for p in browser.find_elements(By.CSS_SELECTOR, "#runs circle.pt")
                if p.get_attribute("data-run") in pushed_runs]

    first, second = pushed_runs
    assert sorted(p[:2] for p in points()) == [(first, "bm25"), (second, "bm25"),
                                               (second, "bm25-title")]
    assert all(" ndcg@10 " in p[2] for p in points())
    Select(browser.find_element(By.ID, "hmetric")).select_by_visible_text("ndcg@10_condensed")
    assert all(" ndcg@10_condensed " in p[2] for p in points()) and len(points()) == 3
    queries = browser.find_elements(By.CSS_SELECTOR, "#qlist .q")
    assert len(queries) >= 10
    # no model deployed: the third configuration is vector search, B against BM25
    columns = browser.find_elements(By.CSS_SELECTOR, "#columns .col")
    assert [c.get_attribute("data-config") for c in columns] == ["bm25", "bm25-title", "knn"]
    figures = {r.get_attribute("data-config"): r.find_elements(By.TAG_NAME, "td")
               for r in browser.find_elements(By.CSS_SELECTOR, "#figures tr[data-config]")}
    assert list(figures) == ["bm25", "knn"]
    assert figures["bm25"][2].text == "bm25@100"
    assert figures["knn"][2].text.startswith("knn@")
    assert figures["bm25"][5].text == "0.0% / 0.0%"  # BM25 closes none of its own gap
    ndcg, top = (tuple(map(float, figures["knn"][i].text.split(" / "))) for i in (3, 4))
    assert all(t >= n - 1e-3 for n, t in zip(ndcg, top, strict=True))
    exposure = {r.get_attribute("data-config"): r.find_elements(By.TAG_NAME, "td")
                for r in browser.find_elements(By.CSS_SELECTOR, "#exposure tr[data-config]")}
    assert list(exposure) == ["bm25", "knn"]  # each one's disparity, side by side
    assert all(0 <= float(cells[2].text) <= 1 for cells in exposure.values())
    first_query = browser.find_element(By.ID, "query").get_attribute("value")
    assert first_query == queries[0].get_attribute("data-q")

    # switch query: the columns show the new query's products with grades and rank changes
    target = "bluetooth speaker"  # all 52 of its judged products are in the slice
    pick = next(q for q in queries if q.get_attribute("data-q") == target)
    assert pick != queries[0]
    pick.click()
    wait.until(lambda b: b.find_element(By.ID, "columns").get_attribute("data-query") == target)
    hits = browser.find_elements(By.CSS_SELECTOR, "#columns .col .hit")
    assert hits
    judged = [h for h in hits if any(f"g{g}" in h.get_attribute("class").split()
                                     for g in range(4))]
    assert judged, "judged products are coloured by grade"
    assert browser.find_elements(By.CSS_SELECTOR, ".metrics")[0].text.startswith("ndcg@10")

    # switch configuration: drop bm25-title and knn, add rrf
    browser.find_element(By.CSS_SELECTOR, "#configs input[value='bm25-title']").click()
    browser.find_element(By.CSS_SELECTOR, "#configs input[value='knn']").click()
    browser.find_element(By.CSS_SELECTOR, "#configs input[value='rrf']").click()
    wait.until(lambda b: b.find_element(By.ID, "columns").get_attribute("data-configs")
               == "bm25,rrf")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#columns .col")) == 2
    # a fused baseline has no model to explain: the page says so without asking
    browser.find_element(By.CSS_SELECTOR, "#columns .col[data-config='rrf'] .hit").click()
    wait.until(lambda b: "rrf has no model to explain" in b.find_element(By.ID, "why").text)

    # the sidecar's Content-Security-Policy refused nothing the page needs
    refused = [e["message"] for e in browser.get_log("browser")
               if "Content Security Policy" in e["message"]]
    assert not refused, refused

    shot = Path(os.environ.get("ESRANK_SCREENSHOT", tmp_path / "compare.png"))
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_the_static_report_opens_without_the_sidecar(engine, slice_alias, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from esrank.evaluation.comparison import side_by_side, static_page
    from esrank.judgments.lists import read_judgments
    from esrank.judgments.llm_judge import MachineGrade
    from esrank.judgments.metrics import Evaluator
    from esrank.ranking.search import search_many

    evaluator = Evaluator(read_judgments(write_slice_judgments(tmp_path / "j.csv")))
    configs = rankers(engine, "none", ["bm25", "bm25-title"], 100)
    # a machine grade for every product of the first five queries: shown only where no
    # person judged the product, and marked
    first = {q: search_many(engine, slice_alias, [q], configs[0], None)[q]
             for q in evaluator.queries[:5]}
    machine = {(q, h.doc_id): MachineGrade(q, h.doc_id, 2, 2.0, "llm-x", "v", "grade@abc")
               for q, hits in first.items() for h in hits}
    sides = {q: [s.__dict__ for s in side_by_side(engine, slice_alias, q, configs, None,
                                                  evaluator, machine=machine)]
             for q in evaluator.queries[:5]}
    deltas = {"a": "bm25", "b": "bm25-title", "metric": "ndcg@10",
              "queries": [{"query": q, "a": 0.5, "b": 0.25, "delta": -0.25} for q in sides],
              "configs": {c: {"ndcg@10": v, "ndcg@10_condensed": v, "candidates": "bm25@100",
                              "ceiling@10": {"ndcg@10": 0.75, "ndcg@10_condensed": 0.75},
                              "gap_closed": {"ndcg@10": g, "ndcg@10_condensed": None},
                              "exposure": {"disparity": v / 2, "per_query_disparity": v,
                                           "queries": 5, "suppliers": 3, "judged_share": 0.5,
                                           "depth": 10, "over_exposed": [
                                               {"supplier": "<i>Acme</i>", "exposure": 0.7,
                                                "relevance": 0.5}], "under_exposed": []}}
                          for c, v, g in (("bm25", 0.5, 0.0), ("bm25-title", 0.25, -1.0))}}
    second = list(sides)[1]
    # a product title that would end the page's script, or open one, is only text
    hostile = "</script><!--<script>window.pwned = 1</script> & <b>bold</b>"
    sides[second][0]["hits"][0]["title"] = hostile
    page = tmp_path / "report.html"
    runs = {"metrics": ["ndcg@10"], "runs": [
        {"run_id": f"r{i}", "timestamp": f"2026-11-2{i}T10:00:00Z", "config": f"shop-v{i}",
         "series": "shop", "version": f"v{i}", "model": f"shop-v{i}", "queries": 5,
         "ndcg@10": 0.5 + i / 10}
        for i in (1, 2, 3)]}
    page.write_text(static_page({"configs": ["bm25", "bm25-title"], "deltas": deltas,
                                 "sides": sides, "runs": runs}))
    browser.get(page.as_uri())
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#qlist .q")) == 5
    assert [td.text for td in browser.find_elements(
        By.CSS_SELECTOR, "#figures tr[data-config='bm25-title'] td")] == [
        "B", "bm25-title", "bm25@100", "0.250 / 0.250", "0.750 / 0.750", "-100.0% / n/a"]
    assert [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in
            browser.find_elements(By.CSS_SELECTOR, "#exposure tr[data-config]")] == [
        [side, c, f"{v / 2:.4f}", f"{v:.4f}", "50.0%", "<i>Acme</i> 70.0% / 50.0%", "-"]
        for side, c, v in (("A", "bm25", 0.5), ("B", "bm25-title", 0.25))]
    ys = [float(p.get_attribute("cy")) for p in browser.find_elements(By.CSS_SELECTOR,
                                                                       "#runs circle.pt")]
    assert len(ys) == 3 and ys[0] > ys[1] > ys[2]  # NDCG rises run by run: the points go up
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs polyline")) == 1
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#runs text")][-3:] == [
        "v1", "v2", "v3"]
    browser.find_elements(By.CSS_SELECTOR, "#qlist .q")[1].click()
    wait.until(lambda b: b.find_element(By.ID, "columns").get_attribute("data-query") == second)
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".col .hit")]
    assert titles and hostile in titles[0]
    judged = evaluator.grades(second)
    unjudged = [h for h in sides[second][0]["hits"] if h["doc_id"] not in judged]
    marked = browser.find_elements(By.CSS_SELECTOR, "#columns .col[data-config='bm25'] "
                                                    ".hit.machine")
    assert unjudged and len(marked) == len(unjudged)
    assert all("g2" in m.get_attribute("class").split() and m.get_attribute("title")
               .startswith("machine grade 2 (llm-x, prompt grade@abc)") for m in marked)
    assert {m.get_attribute("data-doc") for m in marked} == {h["doc_id"] for h in unjudged}
    assert browser.execute_script("return window.pwned") is None
