"""Judges for pairwise comparisons: a model oneml loads itself, or an OpenAI-compatible endpoint.

A judge turns chat messages into a reply. `resolve_judge` checks it before anything is loaded: a model name must
resolve (a preset, a local folder with config.json, or a hub id whose config can be read), an endpoint must answer
``GET /models`` with the key, and must serve the model asked for. Each failure is one line naming the option.

An endpoint is called with ``POST {url}/chat/completions`` (greedy: temperature 0). A request that meets 429, a 5xx,
a timeout or a dropped connection is retried after 1, 2, 4, ... seconds (a server's Retry-After is honoured, up to
60 s), ``retries`` times at most; every attempt counts against the request budget. When the budget is spent the
judging stops, and what was judged so far is kept and scored.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError

ENDPOINT_PREFIXES = ("http://", "https://")
CHECK_TIMEOUT_S = 10.0
"""The reachability check before the run's model loads: a server that cannot list its models in 10 s is down."""
RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 60.0


@dataclass
class JudgeOptions:
    spec: str
    """A model oneml can load (preset, hub id, directory) or an OpenAI-compatible endpoint http(s)://host:port/v1."""
    against: str = "base"
    """base, reference, or a run id / run folder."""
    model: str | None = None
    """The endpoint's model name (default: the first model the endpoint lists)."""
    key_env: str | None = None
    """Name of the environment variable that holds the endpoint's API key (sent as a Bearer token)."""
    budget: int | None = None
    """At most this many judge requests (retries included); None: no limit."""
    max_tokens: int = 16
    """Reply budget of one judgment: the answer is one identifier."""
    timeout_s: float = 120.0
    retries: int = 6
    root: Path = Path("oneml-runs")
    """Where --against RUN is looked up."""


@dataclass
class Budget:
    """Requests left; None: unlimited."""

    left: int | None
    used: int = 0

    def take(self) -> bool:
        if self.left is not None and self.used >= self.left:
            return False
        self.used += 1
        return True

    @property
    def spent(self) -> bool:
        return self.left is not None and self.used >= self.left


class BudgetSpent(Exception):
    """The request budget ran out (the judging stops cleanly)."""


class RequestFailed(Exception):
    """A judgment's request failed for good (after its retries, or with a status that is not worth retrying)."""


class Judge:
    """What a comparison needs from a judge: replies to chat conversations, within a request budget."""

    name: str = ""
    kind: str = ""
    batch: int = 1
    """How many conversations one `complete` call should carry (a local model generates them together)."""

    def __init__(self, budget: int | None):
        self.budget = Budget(budget)
        self.device = "cpu"
        """Where a local judge model loads (the evaluated model's device)."""

    def complete(self, batch: list[list[dict[str, str]]]) -> list[str | Exception]:
        """One entry per conversation: the reply's text, RequestFailed when that request failed for good, or
        BudgetSpent when no request was left for it."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what the judge holds (a local model's memory)."""


# --- endpoints ---------------------------------------------------------------------------------------------------


def is_endpoint(spec: str) -> bool:
    return spec.startswith(ENDPOINT_PREFIXES)


class Endpoint:
    """An OpenAI-compatible server: ``/models`` and ``/chat/completions`` under ``url``."""

    def __init__(self, url: str, key: str | None, timeout_s: float, retries: int, sleep: Callable = time.sleep):
        self.url, self.key, self.timeout_s, self.retries, self.sleep = url.rstrip("/"), key, timeout_s, retries, sleep

    def _request(self, path: str, body: dict | None, timeout: float) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def models(self) -> list[str]:
        """The model ids the server lists; a one-line error when it cannot be reached or refuses the key."""
        try:
            listing = self._request("/models", None, CHECK_TIMEOUT_S)
        except urllib.error.HTTPError as err:
            hint = " (check --judge-key-env)" if err.code in (401, 403) else ""
            raise OnemlError(f"--judge: {self.url}/models answered HTTP {err.code} {err.reason}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise OnemlError(f"--judge: endpoint {self.url} is unreachable ({reason})") from None
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise OnemlError(f"--judge: {self.url}/models did not answer an OpenAI model list")
        return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]

    def chat(self, model: str, messages: list[dict[str, str]], max_tokens: int, budget: Budget) -> str:
        """The reply's text; retried with exponential backoff; BudgetSpent when no request is left."""
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
        for attempt in range(self.retries + 1):
            if not budget.take():
                raise BudgetSpent()
            try:
                reply = self._request("/chat/completions", body, self.timeout_s)
                return str(reply["choices"][0]["message"].get("content") or "")
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS or attempt == self.retries:
                    raise RequestFailed(f"HTTP {err.code} {err.reason}: {_body(err)}") from None
                self.sleep(_backoff(attempt, err.headers.get("Retry-After") if err.headers else None))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    raise RequestFailed(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None
                self.sleep(_backoff(attempt, None))
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise RequestFailed(f"not an OpenAI chat completion: {type(err).__name__}: {err}") from None
        raise RequestFailed("no attempt made")  # unreachable: the loop returns or raises


def _backoff(attempt: int, retry_after: str | None) -> float:
    wait = BACKOFF_START_S * 2**attempt
    if retry_after:
        try:
            wait = max(wait, float(retry_after))
        except ValueError:
            pass  # an HTTP date: the exponential wait stands
    return min(wait, BACKOFF_CAP_S)


def _body(err: urllib.error.HTTPError) -> str:
    try:
        return err.read().decode("utf-8", "replace")[:200].strip()
    except OSError:
        return ""


class EndpointJudge(Judge):
    kind = "endpoint"

    def __init__(self, options: JudgeOptions):
        super().__init__(options.budget)
        key = None
        if options.key_env:
            key = os.environ.get(options.key_env)
            if not key:
                raise OnemlError(f"--judge-key-env: environment variable {options.key_env} is not set (or empty)")
        self.endpoint = Endpoint(options.spec, key, options.timeout_s, options.retries)
        served = self.endpoint.models()
        if options.model is None and not served:
            raise OnemlError(f"--judge: {self.endpoint.url}/models lists no model; name one with --judge-model")
        self.model = options.model or served[0]
        if served and self.model not in served:
            url = self.endpoint.url
            raise OnemlError(f"--judge-model: {url} does not serve {self.model!r}; it serves {', '.join(served)}")
        self.max_tokens = options.max_tokens
        self.name = f"{self.model} at {self.endpoint.url}"

    def complete(self, batch: list[list[dict[str, str]]]) -> list[str | Exception]:
        out: list[str | Exception] = []
        for messages in batch:
            try:
                out.append(self.endpoint.chat(self.model, messages, self.max_tokens, self.budget))
            except (RequestFailed, BudgetSpent) as err:
                out.append(err)
        return out


# --- local models ------------------------------------------------------------------------------------------------


def check_model_name(spec: str) -> str:
    """A one-line error unless ``spec`` names a model oneml can load; returns where it comes from."""
    from oneml.models.catalogue import MODELS
    from oneml.models.loading import locate

    if spec in MODELS:
        return f"preset {spec}"
    where = locate(spec, "--judge", MODELS.names())
    if isinstance(where, Path):
        if not (where / "config.json").is_file():
            raise OnemlError(f"--judge: directory {spec!r} has no config.json (a folder written by save_pretrained)")
        return f"directory {where}"
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(where)
    except Exception as err:  # offline, not found, gated: one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise OnemlError(f"--judge: could not read {spec!r} from the Hugging Face hub ({first})") from None
    return f"hub {spec}"


class ModelJudge(Judge):
    """A model oneml loads itself, greedy, in its own chat template (ChatML when it has none); loaded on first use."""

    kind = "model"

    def __init__(self, options: JudgeOptions, batch_size: int):
        super().__init__(options.budget)
        self.spec, self.max_tokens, self.batch = options.spec, options.max_tokens, batch_size
        self.name = f"{options.spec} ({check_model_name(options.spec)})"
        self.state: dict[str, Any] = {}

    def complete(self, batch: list[list[dict[str, str]]]) -> list[str | Exception]:
        from oneml.eval.generate import chat_prompt, generate

        if not self.state:
            self.state = _load_judge_model(self.spec, self.device)
        tok, template = self.state["tokenizer"], self.state["template"]
        allowed = [self.budget.take() for _ in batch]
        prompts = [chat_prompt(tok, template, m) for m, ok in zip(batch, allowed, strict=True) if ok]
        outs = iter(
            generate(
                self.state["model"],
                tok,
                prompts,
                end_ids=self.state["end_ids"],
                max_new_tokens=self.max_tokens,
                batch_size=len(prompts),
            )  # fmt: skip
            if prompts
            else []
        )
        return [next(outs).text if ok else BudgetSpent() for ok in allowed]

    def close(self) -> None:
        self.state.clear()
        free_memory()


def _load_judge_model(spec: str, device: str) -> dict[str, Any]:
    from oneml.config import ModelConfig
    from oneml.data.templates import NAMED_TEMPLATES
    from oneml.eval.generate import end_of_turn_ids
    from oneml.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=spec), device=device)
    template = getattr(tokenizer, "chat_template", None) or NAMED_TEMPLATES["chatml"]()
    end_ids = end_of_turn_ids(tokenizer, template)
    return {"model": model, "tokenizer": tokenizer, "template": template, "end_ids": end_ids}


def free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # analysis-only installs have no torch; nothing was loaded then
        pass


def resolve_judge(options: JudgeOptions, batch_size: int = 8) -> Judge:
    """The judge ``options`` names, checked (reachable, key present, model served or loadable); nothing loaded yet."""
    if not options.spec.strip():
        raise OnemlError("--judge: empty; give a model (preset, hub id, directory) or an endpoint http://host:port/v1")
    if options.budget is not None and options.budget < 2:
        raise OnemlError(f"--judge-budget: one prompt takes two judgments (both orders); got {options.budget}")
    if is_endpoint(options.spec):
        return EndpointJudge(options)
    for flag, value in (("--judge-key-env", options.key_env), ("--judge-model", options.model)):
        if value:
            raise OnemlError(f"{flag}: only for an endpoint judge (http://host:port/v1); {options.spec!r} is a model")
    return ModelJudge(options, batch_size)
