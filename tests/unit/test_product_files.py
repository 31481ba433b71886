"""Reading product files: every malformed record is a rejection naming file:line, every
unreadable file an InputError naming it; nothing reaches a traceback."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from esrank.catalogue.index import IndexReport, _valid_documents
from esrank.catalogue.products import MAX_RECORD_BYTES, read_products, to_document
from esrank.core.errors import InputError


def _reasons(path) -> dict[int, str]:
    """record number -> why it was rejected, for every record of `path` that is no product."""
    out = {}
    for product in read_products([path]):
        try:
            to_document(product)
        except InputError as exc:
            out[product.position] = str(exc)
    return out


def test_records_that_are_no_object_are_rejected_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('null\n5\n"text"\n[1]\n\n{"id": "1", "title": "ok"}\n')
    reasons = _reasons(path)
    assert set(reasons) == {1, 2, 3, 4}  # the blank line 5 is skipped, line 6 is a product
    assert reasons[1] == f"{path}:1: a product must be a JSON object, found NoneType"
    assert "found int" in reasons[2] and "found list" in reasons[4]


def test_a_record_over_the_limit_is_rejected_unparsed(tmp_path):
    path = tmp_path / "p.jsonl"
    huge = json.dumps({"id": "big", "title": "x" * (MAX_RECORD_BYTES + 10)})
    path.write_text(f'{{"id": "1", "title": "ok"}}\n{huge}\n')
    reasons = _reasons(path)
    assert list(reasons) == [2] and f"at most {MAX_RECORD_BYTES:,}" in reasons[2]
    array = tmp_path / "p.json"
    array.write_text(f'[{{"id": "1", "title": "ok"}}, {huge}]')
    assert list(_reasons(array)) == [2]


def test_an_id_longer_than_the_engines_take_is_rejected(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x" * 600, "title": "long id"}) + "\n"
                    + json.dumps({"id": "é" * 256, "title": "512 bytes"}) + "\n")
    reasons = _reasons(path)
    assert list(reasons) == [1] and "600 bytes" in reasons[1] and "at most 512" in reasons[1]


def test_not_utf8_and_deep_nesting_are_rejections(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "1", "title": "caf\xe9"}\n' + b"[" * 100_000 + b"\n")
    reasons = _reasons(path)
    assert "not UTF-8 (byte 25)" in reasons[1]
    assert "nested too deeply" in reasons[2]


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not a zip"])
def test_a_damaged_zip_is_an_input_error_naming_it(tmp_path, damage):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p.jsonl", "\n".join(json.dumps({"id": str(i), "title": f"product {i}"})
                                         for i in range(2000)))
    raw = buffer.getvalue()
    data_at = raw.index(b"p.jsonl") + len(b"p.jsonl")  # the local header's end: the data
    raw = {"truncated": raw[:len(raw) // 2],
           "corrupt": raw[:data_at + 40] + bytes(200) + raw[data_at + 240:],
           "not a zip": b"PK\x03\x04 nothing more"}[damage]
    path = tmp_path / "p.zip"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=rf"^{path}(!p\.jsonl)?: corrupt or truncated zip"):
        list(read_products([path]))


def test_a_repeated_id_is_rejected_naming_where_it_was_first(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": i, "title": f"t{n}"}) + "\n"
                            for n, i in enumerate([1, 2, "1", 3, 2])))
    report = IndexReport(alias="a", index="a-1")
    seen: dict[str, str] = {}
    products = list(read_products([path]))
    docs = _valid_documents(products[:3], report, seen) + _valid_documents(products[3:],
                                                                           report, seen)
    assert [d for d, _ in docs] == ["1", "2", "3"]
    assert [(r.doc_id, r.where) for r in report.rejected] == [("1", f"{path}:3"),
                                                              ("2", f"{path}:5")]
    assert f"first at {path}:1" in report.rejected[0].reason
