"""Test support for naming: a scripted fake OpenAI-compatible server and synthetic cohort profiles.

`FakeLLM` serves `POST /v1/chat/completions` on 127.0.0.1 (ephemeral port) from a thread. Each
request takes the next scripted mode (then `default`): "good", "fenced", "garbage", "duplicates",
"missing_field", "long_name", "timeout", "slow", "429", "500", "400_seed", "echo_auth_401". Every
request is recorded with its headers and JSON body; `max_in_flight` counts concurrent requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from embeddings.naming.profile_types import CohortProfile, Exemplar, ExemplarEvent, Share

WORDS = [
    "Amber",
    "Birch",
    "Cedar",
    "Delta",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Indigo",
    "Juniper",
]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class FakeLLM:
    default: str = "good"
    sleep_s: float = 2.0  # "timeout" mode: longer than the client's timeout in tests
    retry_after: str = "1"
    slow_s: float = 0.3  # "slow" mode: a good answer after this delay
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _script: deque[str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *modes: str) -> None:
        """Modes for the next requests, in order; afterwards `default` applies."""
        self._script.extend(modes)

    def next_mode(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def count(self) -> int:
        return len(self.requests)


def cohort_ids(body: dict[str, Any]) -> list[int]:
    """Ids of the cohorts a request names in full (the "### Cohort N" headers of the first user turn)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return [int(x) for x in re.findall(r"^### Cohort (\d+)", user, re.MULTILINE)]


def good_answer(ids: list[int], mode: str = "good") -> str:
    items = []
    for cid in ids:
        n = len(WORDS)  # past n cohorts a second word keeps every name distinct
        word = WORDS[cid % n] if cid < n else f"{WORDS[cid % n]} {WORDS[(cid // n) % n]}"
        name = f"{word} evening garden shoppers"
        if mode == "duplicates":
            name = "Evening garden shoppers"
        if mode == "long_name":
            name = "Very very long name that goes on and on forever"
        item = {
            "cohort_id": cid,
            "name": name,
            "description": f"Cohort {cid} shops 2.3× more than average. They love gardens.",
            "suggested_action": "Send a spring garden promotion",
        }
        if mode == "missing_field":
            del item["suggested_action"]
        items.append(item)
    return json.dumps({"cohorts": items})


def _completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


def make_handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def do_POST(self) -> None:
            fake.enter()
            try:
                self._post()
            finally:
                fake.leave()

        def _post(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw or b"{}")
            fake.record(Recorded(self.path, dict(self.headers.items()), body, time.monotonic()))
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            mode = fake.next_mode()
            ids = cohort_ids(body)
            if mode in ("timeout", "slow"):
                time.sleep(fake.sleep_s if mode == "timeout" else fake.slow_s)
                mode = "good"
            if mode == "429":
                self._send(429, b'{"error": "rate limited"}', {"Retry-After": fake.retry_after})
            elif mode == "500":
                self._send(500, b'{"error": "internal"}')
            elif mode == "400_seed":
                self._send(
                    400, b'{"error": {"message": "Unrecognized request argument supplied: seed"}}'
                )
            elif mode == "echo_auth_401":  # a badly behaved proxy echoing the credentials
                auth = self.headers.get("Authorization", "")
                self._send(401, json.dumps({"error": f"invalid credentials {auth}"}).encode())
            elif mode == "garbage":
                self._send(200, _completion("Sure! Here are some great names: Alpha, Beta. {oops"))
            elif mode == "fenced":
                text = "Here you go:\n```json\n" + good_answer(ids) + "\n```\nHope this helps!"
                self._send(200, _completion(text))
            else:
                self._send(200, _completion(good_answer(ids, mode)))

    return Handler


class FakeLLMServer:
    """Context manager running a `FakeLLM` on an ephemeral port; `url` is the base URL (…/v1)."""

    def __init__(self, fake: FakeLLM | None = None) -> None:
        self.fake = fake or FakeLLM()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.fake))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- synthetic profiles for naming tests

AS_OF = "2024-06-30T12:00:00+00:00"


def hours_peaking(part: str) -> list[float]:
    """An hour histogram with 70% of events in one daypart and the rest spread evenly."""
    start = {"night": 0, "morning": 6, "afternoon": 12, "evening": 18}[part]
    return [0.7 / 6 if start <= h < start + 6 else 0.3 / 18 for h in range(24)]


def make_profile(
    cohort_id: int = 0,
    *,
    size: int = 1000,
    share: float = 0.1,
    relative: dict[str, float] | None = None,
    recency_days: float = 10.0,
    frequency: float = 20.0,
    monetary: float = 100.0,
    events: list[tuple[str, float, float]] | None = None,
    categories: list[tuple[str, float, float]] | None = None,
    items: list[tuple[str, float, float]] | None = None,
    daypart: str = "afternoon",
    hour_hist: list[float] | None = None,
    weekday_hist: list[float] | None = None,
    n_exemplars: int = 5,
    extra: dict[str, Any] | None = None,
) -> CohortProfile:
    """A `CohortProfile` built directly; shares are (value, share, lift) triples."""
    rel = {"recency": 1.0, "frequency": 1.0, "monetary": 1.0, "engagement": 1.0, "tenure": 1.0}
    rel.update(relative or {})
    events = events or [("purchase", 0.4, 1.0), ("page_view", 0.5, 1.0), ("search", 0.1, 1.0)]
    categories = (
        categories if categories is not None else [("Garden", 0.3, 1.0), ("Kitchen", 0.2, 1.0)]
    )
    items = items if items is not None else [("Garden hose 15m", 0.05, 1.0)]
    exemplars = [
        Exemplar(
            user_id=f"u{cohort_id}_{k}",
            n_events=30 + k,
            events=[
                ExemplarEvent(
                    f"2024-06-{20 + j:02d}T10:00:00+00:00",
                    events[(j + k) % len(events)][0],
                    item=f"i{k}{j}",
                    category=categories[0][0] if categories else None,
                    amount=24.99 if j % 3 == 0 else None,
                    text=f"Item {k}-{j} title",
                )
                for j in range(8)
            ],
        )
        for k in range(n_exemplars)
    ]
    return CohortProfile(
        cohort_id=cohort_id,
        size=size,
        share=share,
        as_of=AS_OF,
        recency_days=recency_days,
        frequency=frequency,
        monetary=monetary,
        engagement=5.0,
        tenure_days=200.0,
        relative=rel,
        top_events=[Share(*e) for e in events],
        top_categories=[Share(*c) for c in categories],
        top_items=[Share(*i) for i in items],
        hour_hist=hour_hist or hours_peaking(daypart),
        weekday_hist=weekday_hist or [1 / 7] * 7,
        daypart=daypart,
        exemplars=exemplars,
        extra=extra or {},
    )
