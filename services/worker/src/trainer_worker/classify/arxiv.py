"""Abstracts from the arXiv API (an Atom feed), labelled by the category they were searched
under: categories, a submission date range, paging, arXiv's rate limit (one request every
3 s), retries with exponential back-off, and resumption.

Resumable: each page is saved (atomically) under the collection's work folder as soon as it
arrives (and `end.json` once a page reaches the category's end); a later attempt reads the
saved pages and asks arXiv only for the rest. A network that does not answer is
UPSTREAM_UNAVAILABLE once the retries are spent, saying so (TRANSIENT: RQ retries the run,
which resumes); a page that stays malformed is DATA_INVALID.

The clock and the sleep are injected, so tests check the pauses without waiting them out.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from platform_core.errors import AppError, ErrorCode
from platform_core.manifests import write_atomic
from platform_core.specs import ArxivSource
from trainer_worker.classify.records import LabelledText

_log = logging.getLogger(__name__)
ATOM: Final = "{http://www.w3.org/2005/Atom}"
OPENSEARCH: Final = "{http://a9.com/-/spec/opensearch/1.1/}"
MAX_ATTEMPTS: Final = 4  # per page: the first try and three retries (the design's "3 retries")
FIRST_BACKOFF_S: Final = 3.0  # then 6, 12: arXiv's own pace, doubled each time
MAX_RETRY_AFTER_S: Final = 120.0  # a longer Retry-After is capped: the job would look hung
REQUEST_TIMEOUT_S: Final = 30.0  # arXiv answers a 2 000-entry page in a few seconds
# answers worth another try: the API's own overload answers
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class MalformedPage(Exception):
    """The answer was not the Atom feed of a search."""


@dataclass
class RateLimiter:
    """At most one request per `min_interval_s`, measured on `clock`, waited out with
    `sleep`."""

    min_interval_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _last: float | None = None

    def wait(self) -> None:
        if self._last is not None:
            remaining = self._last + self.min_interval_s - self.clock()
            if remaining > 0:
                self.sleep(remaining)
        self._last = self.clock()


@dataclass
class ArxivCollector:
    base_url: str
    work_dir: Path  # saved pages and progress, per category
    limiter: RateLimiter
    timeout_s: float = REQUEST_TIMEOUT_S
    requests_made: int = field(default=0, init=False)

    def rows(self, source: ArxivSource) -> Iterator[LabelledText]:
        """Every category's abstracts in turn (saved pages first, then the rest)."""
        for category in source.categories:
            yield from self._category(source, category)

    def _category(self, source: ArxivSource, category: str) -> Iterator[LabelledText]:
        folder = self.work_dir / category
        folder.mkdir(parents=True, exist_ok=True)
        exhausted_at = _exhausted_at(folder)  # where an earlier attempt found the end
        start = 0
        while start < source.max_per_category:
            page_file = folder / f"page-{start:06d}.jsonl"
            if page_file.is_file():  # saved by an earlier attempt
                entries = _read_page(page_file)
            elif exhausted_at is not None and start >= exhausted_at:
                return
            else:
                wanted = min(source.page_size, source.max_per_category - start)
                entries, total = self._fetch(source, category, start, wanted)
                _save_page(page_file, entries)
                if not entries or start + len(entries) >= total:
                    exhausted_at = start + len(entries)
                    write_atomic(folder / "end.json", json.dumps(exhausted_at).encode())
            for arxiv_id, text in entries[: source.max_per_category - start]:
                yield LabelledText(text=text, label=category, id=arxiv_id)
            if not entries:
                return
            start += len(entries)

    def _fetch(
        self, source: ArxivSource, category: str, start: int, wanted: int
    ) -> tuple[list[tuple[str, str]], int]:
        url = f"{self.base_url}?{_query(source, category, start, wanted)}"
        delay = FIRST_BACKOFF_S
        problem = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.limiter.wait()
            self.requests_made += 1
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310 - an http(s) URL from settings
                    return parse_page(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUSES:
                    raise AppError(
                        ErrorCode.UPSTREAM_UNAVAILABLE,
                        f"the arXiv API refused the query for {category} (HTTP {exc.code})",
                    ) from exc
                problem = f"HTTP {exc.code}"
                retry_after = _retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem = f"no answer ({type(exc).__name__})"
            except MalformedPage as exc:
                problem = f"malformed page ({exc})"
            _log.warning(
                "arXiv request failed",
                extra={"event": "arxiv.retry", "attempt": attempt, "problem": problem},
            )
            if attempt < MAX_ATTEMPTS:
                self.limiter.sleep(max(delay, retry_after or 0.0))
                delay *= 2
        if problem.startswith("malformed"):
            raise AppError(
                ErrorCode.DATA_INVALID,
                f"the arXiv API kept answering {category} at offset {start} with a {problem}",
            )
        raise AppError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"the arXiv API at {urllib.parse.urlsplit(self.base_url).netloc} did not answer "
            f"after {MAX_ATTEMPTS} tries ({problem}); is this machine offline? The pages "
            "collected so far are kept and a retry resumes after them",
        )


def _query(source: ArxivSource, category: str, start: int, wanted: int) -> str:
    search = f"cat:{category}"
    if source.date_from or source.date_to:
        low = f"{source.date_from or '19910101'}0000"
        high = f"{source.date_to or '99991231'}2359"
        search += f" AND submittedDate:[{low} TO {high}]"
    return urllib.parse.urlencode(
        {
            "search_query": search,
            "start": start,
            "max_results": wanted,
            "sortBy": "submittedDate",
            "sortOrder": "ascending",  # new submissions land after the pages already saved
        }
    )


def parse_page(body: bytes) -> tuple[list[tuple[str, str]], int]:
    """(arXiv id without version, "title. abstract") per entry, and the search's total."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - expat >= 2.4 refuses entity expansion bombs
    except ET.ParseError as exc:
        raise MalformedPage(f"not XML: {exc}") from exc
    if root.tag != f"{ATOM}feed":
        raise MalformedPage(f"root element {root.tag!r} is not an Atom feed")
    total_text = root.findtext(f"{OPENSEARCH}totalResults")
    if total_text is None or not total_text.strip().isdigit():
        raise MalformedPage("no opensearch:totalResults")
    entries: list[tuple[str, str]] = []
    for entry in root.iter(f"{ATOM}entry"):
        raw_id = entry.findtext(f"{ATOM}id") or ""
        summary = entry.findtext(f"{ATOM}summary")
        if not raw_id or summary is None:
            raise MalformedPage("an entry without id or summary")
        arxiv_id = raw_id.rstrip("/").rsplit("/abs/", 1)[-1].split("v")[0]
        title = " ".join((entry.findtext(f"{ATOM}title") or "").split())
        entries.append((arxiv_id, f"{title}. {summary.strip()}" if title else summary.strip()))
    return entries, int(total_text)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value else None
    except ValueError:
        return None  # an HTTP date: the back-off applies


def _exhausted_at(folder: Path) -> int | None:
    """The offset past the category's last entry, once a page reached it."""
    try:
        loaded: object = json.loads((folder / "end.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, int) else None


def _save_page(path: Path, entries: list[tuple[str, str]]) -> None:
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in entries)
    write_atomic(path, lines.encode("utf-8"))


def _read_page(path: Path) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row: object = json.loads(line)
        if (
            isinstance(row, dict)
            and isinstance(row.get("id"), str)
            and isinstance(row.get("text"), str)
        ):
            entries.append((str(row["id"]), str(row["text"])))
    return entries
