"""`LLMNamer`: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama, LM Studio)."""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from embeddings.errors import NamingError
from embeddings.naming.base import Namer
from embeddings.naming.generative import CompletionError, GenerativeNamer
from embeddings.naming.prompt import PromptTemplate

logger = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Parameters some servers reject with HTTP 400; they are dropped (once) when an error names them.
OPTIONAL_PARAMS = ("seed", "max_tokens", "temperature")
TOKENS_PER_COHORT = 200


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _safe_url(url: str) -> str:
    """A URL fit for logs: user:password@ removed."""
    return re.sub(r"//[^/@]*@", "//***@", url)


class LLMNamer(GenerativeNamer):
    """Names cohorts with a chat model behind `POST {base_url}/chat/completions`.

    Args:
        base_url: server root including the API prefix, e.g. "https://api.openai.com/v1" or
            "http://localhost:11434/v1" (Ollama); "/chat/completions" is appended.
        model: model name as the server knows it.
        api_key_env: environment variable holding the key, read at request time and sent as a
            Bearer token; never logged or stored. Unset or empty: no Authorization header (local servers).
        timeout_s: per-request timeout. max_retries: extra attempts on timeouts, connection errors,
            429 and 5xx, with exponential backoff from `backoff_s` (Retry-After wins when given,
            capped at `max_backoff_s`).
        concurrency: requests in flight at once when cohorts are split into several requests.
        cache_dir: where validated names are cached (e.g. `<workspace>/naming_cache/`); None: no cache.
        client: an `httpx.Client` to use (tests, proxies, custom TLS); created and owned otherwise.
        fallback: namer for cohorts the model cannot name (default `StatsNamer`).
        temperature, seed: sent for determinism; a server that rejects a parameter gets it dropped.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        client: httpx.Client | None = None,
        fallback: Namer | None = None,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_cohorts_per_request: int = 12,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        template: PromptTemplate | None = None,
    ) -> None:
        if not base_url or not model:
            raise NamingError(
                "The llm namer needs a base_url (e.g. http://127.0.0.1:8080/v1) and a model name: "
                "set naming.base_url and naming.model in the config, or pass --base-url and --model."
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max(0, int(max_retries))
        self.temperature = temperature
        self.seed = seed
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.namer_tag = f"llm:{model}"
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()
        self._dropped: set[str] = set()
        super().__init__(
            cache_dir=cache_dir,
            cache_model=f"llm:{model}",
            fallback=fallback,
            max_cohorts_per_request=max_cohorts_per_request,
            concurrency=concurrency,
            template=template,
        )

    def __repr__(self) -> str:
        return f"LLMNamer(base_url={_safe_url(self.base_url)!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def close(self) -> None:
        """Close the HTTP client if this namer created it."""
        with self._lock:
            if self._own_client and self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> LLMNamer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout_s)
            return self._client

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "***") if len(key) >= 4 else text

    def _payload(self, messages: list[dict[str, str]], n_cohorts: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "stream": False}
        optional = {
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": TOKENS_PER_COHORT * n_cohorts + 200,
        }
        payload.update(
            {k: v for k, v in optional.items() if v is not None and k not in self._dropped}
        )
        return payload

    def _complete(self, messages: list[dict[str, str]], n_cohorts: int) -> str:
        headers = {"Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempt, reason = 0, "no attempt made"
        while True:
            payload = self._payload(messages, n_cohorts)
            delay = None
            try:
                resp = self._http().post(
                    self.url, json=payload, headers=headers, timeout=self.timeout_s
                )
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout_s:g}s"
            except httpx.TransportError as e:
                reason = f"connection error ({type(e).__name__})"
            else:
                if resp.status_code == 200:
                    return self._content(resp)
                body = self._redact(resp.text[:300])
                reason = f"HTTP {resp.status_code}: {body}"
                if resp.status_code == 400 and self._drop_rejected(body, payload):
                    continue  # same attempt, without the parameter the server rejected
                if resp.status_code not in RETRY_STATUS:
                    raise CompletionError(reason)
                delay = _retry_after(resp.headers.get("Retry-After"))
            if attempt >= self.max_retries:
                raise CompletionError(f"{reason} (gave up after {attempt + 1} attempts)")
            if delay is None:
                delay = self.backoff_s * 2**attempt * (1 + 0.1 * random.random())
            delay = min(delay, self.max_backoff_s)
            attempt += 1
            logger.warning(
                "%s: request to %s failed (%s); retry %d/%d in %.2fs",
                self.namer_tag,
                _safe_url(self.url),
                self._redact(reason)[:120],
                attempt,
                self.max_retries,
                delay,
            )
            time.sleep(delay)

    def _drop_rejected(self, body: str, payload: dict[str, Any]) -> bool:
        """Drop an optional parameter the server's 400 error names; False if there is none to drop."""
        for param in OPTIONAL_PARAMS:
            if param in payload and param in body and param not in self._dropped:
                logger.info("%s: server rejected %r; retrying without it", self.namer_tag, param)
                self._dropped.add(param)
                return True
        return False

    def _content(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise CompletionError(
                f"malformed chat-completions response ({type(e).__name__})"
            ) from None
        if choice.get("finish_reason") == "length":
            logger.info("%s: answer was cut at max_tokens", self.namer_tag)
        return content if isinstance(content, str) else ""
