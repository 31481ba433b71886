"""The comparison page written as one file (esrank compare --html): the page the sidecar
serves, with the data built in where the page reads it, and nothing in it that ends a script."""

from __future__ import annotations

from esrank.evaluation.comparison import PAGE, static_page


def test_the_static_page_is_the_served_page_with_its_data_built_in():
    html = static_page({"configs": ["bm25", "shop-v2"], "title": "</script><b>&"})
    served = PAGE.read_text()
    assert "/*ESRANK_DATA*/null" in served and "/*ESRANK_DATA*/null" not in html
    assert '"configs": ["bm25", "shop-v2"]' in html
    assert "\\u003c/script\\u003e\\u003cb\\u003e\\u0026" in html
    assert html.replace('{"configs": ["bm25", "shop-v2"], "title": '
                        '"\\u003c/script\\u003e\\u003cb\\u003e\\u0026"}',
                        "/*ESRANK_DATA*/null") == served
