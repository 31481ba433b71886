"""The esrank exception hierarchy; every error carries enough context to act on."""

from __future__ import annotations


class EsrankError(Exception):
    """Base class of all esrank errors (CLI exit code 1)."""


class InputError(EsrankError, ValueError):
    """A user-supplied file or value is malformed; the message names file:line and field."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(EsrankError):
    """Settings are missing or inconsistent."""


class NoCrossEncoderError(ConfigError):
    """A rerank stage was asked for, and no cross-encoder is configured (the sidecar: 501)."""

    def __init__(self, what: str = "a rerank stage"):
        super().__init__(f"{what} needs a cross-encoder: none is configured "
                         "(ESRANK_CROSS_ENCODER)")


class ScorerError(EsrankError):
    """The query encoder or the cross-encoder failed while filling a query's params; `scorer`
    names which ("encoder", "cross-encoder"), the message is the cause's."""

    def __init__(self, scorer: str, cause: Exception):
        self.scorer = scorer
        super().__init__(f"{type(cause).__name__}: {cause}")


class MissingScorerError(InputError):
    """A param is filled by a scorer ("encoder", "cross-encoder") that is not configured."""

    def __init__(self, scorer: str, message: str, *, source: str | None = None):
        self.scorer = scorer
        super().__init__(message, source=source)


class EngineError(EsrankError):
    """The search engine refused or failed an operation, or cannot be reached."""

    def __init__(self, operation: str, reason: str, *, target: str | None = None,
                 status: int | None = None):
        self.operation = operation
        self.reason = reason
        self.target = target
        self.status = status
        on = f" on {target}" if target else ""
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{operation}{on} failed{code}: {reason}")


class EngineTimeoutError(EngineError):
    """The engine did not answer within the request timeout (the sidecar answers 504)."""

    def __init__(self, operation: str, url: str, timeout: float, *, target: str | None = None):
        self.timeout = timeout
        super().__init__(operation, f"no answer from {url} within {timeout:g} s (timed out)",
                         target=target)


class NameTakenError(EngineError):
    """The LTR plugin refused to store a model under a name that exists (it never overwrites
    one): another upload took the name first."""


class ModelError(EsrankError):
    """A model does not match its feature set or cannot be exported/loaded."""


class NotFoundError(EsrankError, LookupError):
    """Something asked for by name does not exist: a configuration, a model's training
    artifact, a doc outside a ranking (the sidecar answers 404; the CLI prints one line)."""


class UnknownModelError(ModelError, NotFoundError):
    """A model name that names no deployed model."""
