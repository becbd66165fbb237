"""AWS through boto3: one client factory and one table of botocore errors, for SSM (`ssm.py`) and ECR (`registry.py`).

boto3/botocore are imported only inside these functions, i.e. only when an app has `secrets` or an ECR
image to pull. botocore's messages can quote a request, so every mapping is `chain=False` (no third-party
traceback chain in any output) and every quoted line goes through the log redactor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from controller.drivers.mapping import Rule, map_exceptions
from controller.kernel.errors import ControllerError, ServiceUnavailable, one_line
from controller.kernel.logs import redact_text


def aws_config(service: str) -> Any:
    """botocore Config: standard retry mode (throttling is retried with backoff), short timeouts."""
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
    return Config(
        retries={"mode": os.environ.get("AWS_RETRY_MODE") or "standard", "max_attempts": attempts},
        connect_timeout=float(os.environ.get("BLUEGREEN_AWS_CONNECT_TIMEOUT") or 5),
        read_timeout=float(os.environ.get("BLUEGREEN_AWS_READ_TIMEOUT") or 15),
        user_agent_extra="bluegreen-controller",
    )


def aws_client(service: str, region: str | None) -> Any:
    """A boto3 client on the standard credential chain; AWS_ENDPOINT_URL[_<SERVICE>] override the endpoint."""
    import boto3  # lazily: a plain --once of an app without secrets never imports it

    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=aws_config(service))


def redacted_line(e: object) -> str:
    """The first line of a third-party message, with every registered secret masked."""
    return redact_text(one_line(e))


def _client_error(e: BaseException) -> str:
    response: dict[str, Any] = getattr(e, "response", None) or {}
    err = response.get("Error") or {}
    code = str(err.get("Code") or "Error")
    raw = str(err.get("Message") or "")
    xml = re.search(r"<Code>([^<]*)</Code>.*?<Message>([^<]*)</Message>", raw, re.S)
    if xml:  # an XML error body where JSON was expected (some proxies and emulators)
        code, raw = xml.group(1), xml.group(2)
    retries = (response.get("ResponseMetadata") or {}).get("RetryAttempts")
    extra = f" (after {retries} retries)" if retries else ""
    return f"{code}{extra}: {redacted_line(raw)}".rstrip(": ")


# Error codes that say "not now", not "not this": retried with backoff like an unreachable endpoint.
_TRANSIENT_CODES = frozenset(
    {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException", "ServiceUnavailable",
     "InternalServerError", "InternalFailure", "RequestTimeout", "RequestTimeoutException"}
)


def _is_transient(e: BaseException) -> bool:
    response: dict[str, Any] = getattr(e, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "") in _TRANSIENT_CODES


class _TransientClientError(Exception):
    """Marker for `aws_rules`: a ClientError whose code is transient (see `aws_errors`)."""


def aws_rules(target: type[ControllerError]) -> list[Rule]:
    """botocore's exceptions onto `target` (SecretsError for SSM, ImageError for ECR); specific rows first.

    An endpoint that does not answer, or answers "throttled/unavailable", is `ServiceUnavailable` (temporary:
    retried with backoff); everything else is `target` (permanent until something changes)."""
    import botocore.exceptions as bx

    return [
        Rule(
            (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError),
            ServiceUnavailable,
            "AWS endpoint unreachable",
            redacted_line,
        ),
        Rule(_TransientClientError, ServiceUnavailable, explain=lambda e: _client_error(e.__cause__ or e)),
        Rule(bx.NoRegionError, target, explain=lambda _: "no AWS region (set secrets.ssm.region, AWS_REGION or a profile region)"),
        Rule(
            (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError),
            target,
            explain=lambda _: "no AWS credentials (instance profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)",
        ),
        Rule(bx.ClientError, target, explain=_client_error),
        Rule(bx.BotoCoreError, target, explain=lambda e: f"{type(e).__name__}: {redacted_line(e)}"),
    ]


@contextmanager
def aws_errors(what: str, target: type[ControllerError]) -> Iterator[None]:
    """A botocore failure inside becomes `target("<what>: <one line>")`, never carrying a parameter value."""
    with map_exceptions(aws_rules(target), what, chain=False):
        try:
            yield
        except Exception as e:
            if _is_transient(e):
                raise _TransientClientError() from e
            raise
