"""The arXiv collector against a real local HTTP server serving Atom pages: paging, the
query it sends, a 503 and a malformed page retried, the pause between requests (on an
injected clock), resumption after a failure, and a clear error when nothing answers."""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core import queue
from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import ArxivSource
from trainer_worker.classify import arxiv
from trainer_worker.classify.arxiv import ArxivCollector, MalformedPage, RateLimiter, parse_page

pytestmark = pytest.mark.integration

ENTRY = """<entry><id>http://arxiv.org/abs/{id}v2</id><title>Title {id}
  spans lines</title><summary>  Abstract of {id} about {cat}.  </summary>
  <arxiv:primary_category term="{cat}"/></entry>"""
FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom">
<opensearch:totalResults>{total}</opensearch:totalResults>{entries}</feed>"""


def feed(category: str, start: int, count: int, total: int) -> bytes:
    entries = "".join(
        ENTRY.format(id=f"{category[:2]}{n:04d}", cat=category) for n in range(start, start + count)
    )
    return FEED.format(total=total, entries=entries).encode()


@dataclass
class FakeClock:
    """Time that passes only when the collector sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class ArxivStandIn:
    """Answers each query from `script`: (status, body) per request, else a feed page."""

    total: int
    script: list[tuple[int, bytes]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    def answer(self, query: dict[str, str]) -> tuple[int, bytes]:
        self.queries.append(query)
        if self.script:
            return self.script.pop(0)
        category = query["search_query"].split()[0].removeprefix("cat:")
        start, wanted = int(query["start"]), int(query["max_results"])
        return 200, feed(category, start, max(0, min(wanted, self.total - start)), self.total)


@pytest.fixture
def stand_in() -> Iterator[tuple[ArxivStandIn, str]]:
    state = ArxivStandIn(total=5)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            status, body = state.answer(query)
            self.send_response(status)
            self.send_header("Content-Type", "application/atom+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/api/query"
    finally:
        server.shutdown()
        server.server_close()


def _collector(url: str, work: Path, clock: FakeClock) -> ArxivCollector:
    limiter = RateLimiter(3.0, clock=clock, sleep=clock.sleep)
    return ArxivCollector(base_url=url, work_dir=work, limiter=limiter, timeout_s=5.0)


SOURCE = ArxivSource(
    categories=("cs.LG", "math.PR"), date_from="20230101", date_to="20231231", page_size=2
)


def test_pages_through_every_category_with_the_query_and_pause_arxiv_asks_for(
    stand_in: tuple[ArxivStandIn, str], tmp_path: Path
) -> None:
    state, url = stand_in
    clock = FakeClock()
    rows = list(_collector(url, tmp_path, clock).rows(SOURCE))
    assert [row.id for row in rows[:5]] == ["cs0000", "cs0001", "cs0002", "cs0003", "cs0004"]
    assert [row.label for row in rows] == ["cs.LG"] * 5 + ["math.PR"] * 5
    assert rows[0].text == "Title cs0000 spans lines. Abstract of cs0000 about cs.LG."
    assert len(state.queries) == 6  # 2 + 2 + 1 per category: the last page tells the end
    first = state.queries[0]
    assert first["search_query"] == "cat:cs.LG AND submittedDate:[202301010000 TO 202312312359]"
    assert (first["start"], first["max_results"], first["sortOrder"]) == ("0", "2", "ascending")
    assert [q["start"] for q in state.queries[:3]] == ["0", "2", "4"]
    assert clock.sleeps == [3.0] * 5  # one request every 3 s, no sleep before the first


def test_a_503_and_a_malformed_page_are_retried_with_backoff(
    stand_in: tuple[ArxivStandIn, str], tmp_path: Path
) -> None:
    state, url = stand_in
    state.script = [(503, b"busy"), (200, b"<feed><unclosed>")]
    clock = FakeClock()
    source = ArxivSource(categories=("cs.LG", "cs.CV"), max_per_category=2, page_size=2)
    rows = list(_collector(url, tmp_path, clock).rows(source))
    assert [row.id for row in rows] == ["cs0000", "cs0001", "cs0000", "cs0001"]
    assert len(state.queries) == 4  # 503, malformed, then one page per category
    assert clock.sleeps == [3.0, 6.0, 3.0]  # back-off 3 s, then 6 s; then the rate limit


def test_a_failure_keeps_the_pages_and_a_retry_resumes_after_them(
    stand_in: tuple[ArxivStandIn, str], tmp_path: Path
) -> None:
    state, url = stand_in
    state.script = [(200, feed("cs.LG", 0, 2, 5))] + [(503, b"down")] * 4
    with pytest.raises(AppError) as caught:
        list(_collector(url, tmp_path, FakeClock()).rows(SOURCE))
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "HTTP 503" in caught.value.message and "resumes" in caught.value.message
    state.queries.clear()
    rows = list(_collector(url, tmp_path, FakeClock()).rows(SOURCE))
    assert len(rows) == 10
    assert [q["start"] for q in state.queries][:2] == ["2", "4"]  # page 0 came from disk


def test_a_page_that_stays_malformed_is_data_invalid(
    stand_in: tuple[ArxivStandIn, str], tmp_path: Path
) -> None:
    state, url = stand_in
    state.script = [(200, b"<html>maintenance</html>")] * 4
    with pytest.raises(AppError) as caught:
        list(_collector(url, tmp_path, FakeClock()).rows(SOURCE))
    assert caught.value.code is ErrorCode.DATA_INVALID
    assert "not an Atom feed" in caught.value.message


def test_offline_is_a_clear_upstream_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()
    with pytest.raises(AppError) as caught:
        list(_collector(f"http://127.0.0.1:{port}/q", tmp_path, clock).rows(SOURCE))
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "offline" in caught.value.message
    assert clock.sleeps == [3.0, 6.0, 12.0]


def test_parse_page_reads_ids_without_versions_and_the_total() -> None:
    entries, total = parse_page(feed("hep-th", 7, 1, 9))
    assert (entries[0][0], total) == ("he0007", 9)
    with pytest.raises(MalformedPage, match="totalResults"):
        parse_page(b"<feed xmlns='http://www.w3.org/2005/Atom'/>")


def test_the_preparation_job_collects_from_the_configured_arxiv(
    stand_in: tuple[ArxivStandIn, str],
    redis_client: redis.Redis,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, url = stand_in
    state.total = 12
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setenv("APP__CLASSIFY__ARXIV_URL", url)
    monkeypatch.setenv("APP__CLASSIFY__ARXIV_MIN_INTERVAL_S", "0")
    spec: JsonObject = {
        "source": {"kind": "arxiv", "categories": ["cs.LG", "q-bio.GN"], "page_size": 5},
        "min_words": 3,
        "baseline": False,
    }
    enqueue_job(redis_client, "prepare_dataset", "ds-arxiv", spec)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True
    )
    assert RunStateStore(redis_client).status("ds-arxiv") is RunStatus.COMPLETED
    manifest = read_dataset_manifest(DataLayout(data_root).dataset_manifest("ds-arxiv"))
    assert manifest.source == "arxiv:cs.LG,q-bio.GN"
    assert manifest.report.class_counts == {"cs.LG": 12, "q-bio.GN": 12}
    assert len(state.queries) == 6


def test_an_unreachable_arxiv_is_retried_by_rq_and_resumes_from_the_saved_pages(
    stand_in: tuple[ArxivStandIn, str],
    redis_client: redis.Redis,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, url = stand_in
    state.total = 12
    state.script = [(200, feed("cs.LG", 0, 5, 12))] + [(503, b"down")] * 4
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setenv("APP__CLASSIFY__ARXIV_URL", url)
    monkeypatch.setenv("APP__CLASSIFY__ARXIV_MIN_INTERVAL_S", "0")
    monkeypatch.setattr(arxiv, "FIRST_BACKOFF_S", 0.01)
    monkeypatch.setattr(queue, "TRANSIENT_RETRY", (0, 0))  # RQ retries at once in burst mode
    spec: JsonObject = {
        "source": {"kind": "arxiv", "categories": ["cs.LG", "q-bio.GN"], "page_size": 5},
        "min_words": 3,
        "baseline": False,
    }
    enqueue_job(redis_client, "prepare_dataset", "ds-retry", spec)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True
    )
    assert RunStateStore(redis_client).status("ds-retry") is RunStatus.COMPLETED
    starts = [q["start"] for q in state.queries]
    # the first attempt: page 0, then page 5 four times (503); the retry starts at page 5
    assert starts == ["0", "5", "5", "5", "5", "5", "10", "0", "5", "10"]
    manifest = read_dataset_manifest(DataLayout(data_root).dataset_manifest("ds-retry"))
    assert manifest.report.class_counts == {"cs.LG": 12, "q-bio.GN": 12}
