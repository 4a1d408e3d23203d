"""Typed errors: every failure a user can cause is one of these, with a one-line message and an exit code.

The library raises; only the CLI prints and exits. The tree::

    ModelctlError                      exit 1   (unexpected / generic)
    +-- UsageError                     exit 2   bad arguments that typer cannot see
    |   +-- InvalidReference           exit 2   a name, tag or digest that does not parse
    +-- NotFound                       exit 3   model, tag, blob or file absent (locally or remotely)
    +-- AuthError                      exit 4   401/403 from a registry or token service
    +-- IntegrityError                 exit 5   digest mismatch, corrupt file, malformed manifest
    |   +-- DigestMismatch
    |   +-- UnsupportedFormat          (an artifact we cannot read: a format, not corruption)
    |   +-- GGUFError
    +-- DoesNotFit                     exit 6   refused: the model does not fit in memory
    +-- RegistryError                  exit 7   unreachable / 5xx after retries, protocol violations
    +-- NoSpace                        exit 8   not enough free disk (before a download, or a write that hit ENOSPC)
    +-- RuntimeCrashed                 exit 9   llama.cpp died in its worker process (signal, abort, OOM kill)
    +-- Interrupted                    exit 130 / 143   Ctrl-C or SIGTERM stopped a command; says what was kept

    BaseException
    +-- KeyboardInterrupt              Ctrl-C, as Python raises it in the main thread
    +-- Terminated                     SIGTERM, raised in the main thread by the CLI's handler

``RegistryError`` carries the HTTP status and the OCI error code; ``temporary`` says whether a retry may help.
``hint`` is the second half of the one-line message: what the user can do about it.

A command that can be interrupted half-way (pull, push, save, load, package) catches ``INTERRUPTS`` where it knows
what it has done, stops its threads, leaves its partial output resumable or removed, and raises ``Interrupted``
with the one line that says so.
"""

from __future__ import annotations


class ModelctlError(Exception):
    """Base of every error modelctl raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class UsageError(ModelctlError):
    exit_code = 2


class InvalidReference(UsageError):
    """A model reference that does not follow the OCI/Docker name grammar."""


class NotFound(ModelctlError):
    exit_code = 3


class AuthError(ModelctlError):
    exit_code = 4


class IntegrityError(ModelctlError):
    exit_code = 5


class DigestMismatch(IntegrityError):
    def __init__(self, expected: str, actual: str, *, what: str = "content") -> None:
        super().__init__(
            f"digest mismatch for {what}: expected {expected}, got {actual}",
            hint="the download was corrupted or the registry served wrong data; pull again",
        )
        self.expected = expected
        self.actual = actual


class UnsupportedFormat(IntegrityError):
    """An artifact whose media types modelctl does not understand."""


class GGUFError(IntegrityError):
    """A GGUF file (or header) that is malformed or hostile."""


class DoesNotFit(ModelctlError):
    exit_code = 6


class RegistryError(ModelctlError):
    """A registry answered with an error (or not at all)."""

    exit_code = 7

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        temporary: bool = False,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.temporary = temporary
        self.retry_after = retry_after


class NoSpace(ModelctlError):
    """Not enough disk space: ``directory`` is where it ran out, ``needed`` how many more bytes it takes."""

    exit_code = 8

    def __init__(self, message: str, *, hint: str | None = None, directory: str = "", needed: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.directory = directory
        self.needed = needed


class RuntimeCrashed(ModelctlError):
    """The runtime's worker process died: a signal (SIGSEGV, SIGABRT, the OOM killer's SIGKILL) or a Python error.

    ``signal`` names the signal (None for an error exit); ``phase`` is what it was doing: load, prompt, generation.
    """

    exit_code = 9

    def __init__(self, message: str, *, hint: str | None = None, signal: str | None = None, phase: str = "") -> None:
        super().__init__(message, hint=hint)
        self.signal = signal
        self.phase = phase


class CardError(UsageError):
    """A model card whose YAML front matter is missing, malformed or breaks the schema (names file and field)."""


SIGINT = 2
SIGTERM = 15


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the CLI's signal handler.

    It unwinds like Ctrl-C (temp files removed, partial downloads saved) but is no ``KeyboardInterrupt``: code that
    shrugs off Ctrl-C (the chat prompt, which cancels an answer on it) must still end on SIGTERM."""


INTERRUPTS = (KeyboardInterrupt, Terminated)
"""What a command catches to stop cleanly and raise :class:`Interrupted`."""


def signal_of(exc: BaseException) -> int:
    """The signal number behind an interrupt: SIGTERM for :class:`Terminated`, else SIGINT."""
    if isinstance(exc, Interrupted):
        return exc.signum
    return SIGTERM if isinstance(exc, Terminated) else SIGINT


class Interrupted(ModelctlError):
    """A command stopped by Ctrl-C (exit 130) or SIGTERM (exit 143) after putting its work in a safe state.

    The message is the one line the user sees, e.g. "interrupted: 41943040 of 268435456 bytes kept; run the same
    command to resume"."""

    def __init__(self, message: str, *, signum: int = SIGINT) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    @classmethod
    def by(cls, exc: BaseException, message: str) -> Interrupted:
        """The Interrupted for the interrupt ``exc`` (KeyboardInterrupt or Terminated) with ``message``."""
        return cls(message, signum=signal_of(exc))


def shown(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: a value from outside (a digest, a name, a media type) goes into a
    one-line message, and a hostile one may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
