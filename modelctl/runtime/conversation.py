"""A chat as plain values: the messages, the sampling settings, and the rule that keeps it inside the context.

No llama.cpp here: token counting is passed in, so the trimming rule is testable without a model.
Messages use the OpenAI shape (``{"role": ..., "content": ...}``) that llama-cpp-python consumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from modelctl.errors import UsageError

Message = dict[str, str]
TokenCounter = Callable[[list[Message]], int]

SETTABLE = ("temperature", "top_p", "top_k", "seed", "max_tokens")


@dataclass(frozen=True, kw_only=True, slots=True)
class Sampling:
    """How tokens are drawn. The defaults are llama.cpp's own."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    """None: a random seed per answer."""
    max_tokens: int | None = None
    """None: until the model stops or the context is full."""
    stop: tuple[str, ...] = ()
    """Strings that end an answer (an Ollama model's ``stop`` parameters)."""

    def with_value(self, name: str, text: str) -> Sampling:
        """A copy with one setting parsed from text (``/set temperature 0.2``); UsageError when invalid."""
        if name not in SETTABLE:
            raise UsageError(f"unknown setting {name!r}", hint=f"settable: {', '.join(SETTABLE)}")
        try:
            if name == "temperature":
                return replace(self, temperature=_number(text, 0.0, 10.0))
            if name == "top_p":
                return replace(self, top_p=_number(text, 0.0, 1.0))
            if name == "top_k":
                return replace(self, top_k=_integer(text, 0))
            if name == "seed":
                return replace(self, seed=_integer(text, 0))
            return replace(self, max_tokens=_integer(text, 1))
        except ValueError:
            raise UsageError(f"invalid value {text!r} for {name}", hint=_RANGES[name]) from None

    def to_json(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
        }


def _number(text: str, low: float, high: float) -> float:
    value = float(text)
    if not low <= value <= high:
        raise ValueError(text)
    return value


def _integer(text: str, low: int) -> int:
    value = int(text)
    if value < low:
        raise ValueError(text)
    return value


_RANGES = {
    "temperature": "use a number from 0 to 10 (0 is greedy)",
    "top_p": "use a number from 0 to 1",
    "top_k": "use a whole number >= 0 (0 disables it)",
    "seed": "use a whole number >= 0",
    "max_tokens": "use a whole number >= 1",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Stats:
    """Timing of one answer. Rates count decoded tokens after the first one, as llama.cpp's own report does."""

    prompt_tokens: int
    """Prompt tokens evaluated for this answer (those reused from the previous turn's cache are not counted)."""
    completion_tokens: int
    time_to_first_token: float
    """Seconds from the request to the first streamed text."""
    generation_seconds: float
    """Seconds from the first streamed text to the end of the answer."""
    decoded_tokens: int
    """Tokens decoded after the first one (the ones ``generation_seconds`` measures)."""

    @property
    def tokens_per_second(self) -> float:
        return self.decoded_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.completion_tokens} tokens, {self.tokens_per_second:.1f} tokens/s, "
            f"time to first token {self.time_to_first_token * 1000:.0f} ms, "
            f"prompt {self.prompt_tokens} tokens"
        )

    def to_json(self) -> dict[str, float | int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "time_to_first_token": round(self.time_to_first_token, 6),
            "generation_seconds": round(self.generation_seconds, 6),
            "tokens_per_second": round(self.tokens_per_second, 3),
        }


@dataclass(kw_only=True, slots=True)
class Conversation:
    """The system prompt and the turns so far; :meth:`fit` drops the oldest turns when the context fills."""

    system: str | None = None
    turns: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        head: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.turns]

    def add(self, role: str, content: str) -> None:
        self.turns.append({"role": role, "content": content})

    def clear(self) -> None:
        """A new conversation; the system prompt stays."""
        self.turns.clear()

    def drop_last_user(self) -> None:
        """Forget an unanswered question (its answer was interrupted before any text)."""
        if self.turns and self.turns[-1]["role"] == "user":
            self.turns.pop()

    def fit(self, count: TokenCounter, budget: int) -> int:
        """Drop the oldest turns until the prompt takes at most ``budget`` tokens; return how many were dropped.

        The system prompt and the newest message are always kept: when those alone are too long, the newest
        message cannot be answered in this context and UsageError says so.
        """
        dropped = 0
        while count(self.messages()) > budget:
            if len(self.turns) <= 1:
                raise UsageError(
                    f"the message does not fit in the context window ({count(self.messages())} tokens, "
                    f"{budget} available for the prompt)",
                    hint="shorten it, or run with a larger --ctx-size",
                )
            # Drop a whole exchange (user + assistant) so the roles keep alternating.
            remove = 2 if len(self.turns) > 2 and self.turns[1]["role"] == "assistant" else 1
            del self.turns[:remove]
            dropped += remove
        return dropped


def prompt_budget(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens the prompt may use so that an answer still has room: max_tokens, or a quarter of the context."""
    reserve = max_tokens if max_tokens is not None else n_ctx // 4
    reserve = min(reserve, n_ctx // 2)
    return max(n_ctx - reserve, 1)
