"""The Vercel contract as a checker: every request and response against the OpenAPI subset (openapi-core).

Used by the emulator's tests (tests/sandbox) and by the deployment flow tests, which check every request
ops-agent's own client sends and every answer it gets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2

FIXTURES = Path(__file__).parent / "fixtures" / "vercel"
SUBSET = FIXTURES / "vercel-openapi-subset.json"
INVALID_REQUEST = {"contract": "invalid-request"}  # pass as `extensions=` on a deliberately malformed request
NOT_IN_SUBSET = re.compile(r"^/_sandbox/")
CLI_ROLLBACK = re.compile(r"^/v9/(projects/[^/]+/rollback/[^/]+)$")  # the CLI's path; same operation as v1


class ContractViolation(AssertionError):
    pass


class Contract:
    """openapi-core over the subset, built once per session (loading the 1 MB spec takes ~1.5 s)."""

    def __init__(self, path: Path) -> None:
        from openapi_core import OpenAPI
        from openapi_schema_validator import OAS30Validator

        self.openapi = OpenAPI.from_file_path(str(path))
        spec = json.loads(path.read_text())
        self._error_schema = OAS30Validator(spec["components"]["schemas"]["VercelError"])
        # Operations whose 200 is only stream+json (getRuntimeLogs): openapi-core can't read those bodies,
        # so each line is checked against the declared schema directly.
        self._stream_only: list[tuple[str, re.Pattern[str], Any]] = []
        for template, operations in spec["paths"].items():
            for method, operation in operations.items():
                content = operation.get("responses", {}).get("200", {}).get("content", {}) if isinstance(operation, dict) else {}
                if list(content) == ["application/stream+json"]:
                    pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")
                    schema = {**content["application/stream+json"]["schema"], "components": spec["components"]}
                    self._stream_only.append((method.upper(), pattern, OAS30Validator(schema)))

    def check(self, request: httpx2.Request, response: httpx2.Response) -> None:
        from openapi_core.exceptions import OpenAPIError
        from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
        from openapi_core.templating.responses.exceptions import ResponseNotFound
        from openapi_core.testing import MockRequest, MockResponse

        path = request.url.path
        if NOT_IN_SUBSET.match(path):
            return
        path = CLI_ROLLBACK.sub(r"/v1/\1", path)
        spec_request = MockRequest(
            "https://api.vercel.com",
            request.method,
            path,
            args=_multi(request.url.params.multi_items()),
            headers=dict(request.headers),
            data=request.content or None,
            content_type=request.headers.get("content-type", ""),
        )
        where = f"{request.method} {request.url.path} -> {response.status_code}"
        request_error: Exception | None = None
        try:
            self.openapi.validate_request(spec_request)
        except (PathNotFound, OperationNotFound):
            pass  # not an operation of the subset (an unknown path or method): only the error body is checked
        except OpenAPIError as exc:
            request_error = exc
        if request.extensions.get("contract") == "invalid-request":
            if request_error is None:
                raise ContractViolation(f"{where}: sent as malformed, but the subset accepts the request")
        elif request_error is not None:
            raise ContractViolation(f"{where}: the test sent a request the subset rejects: {_why(request_error)}")

        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/stream+json"):
            for method, pattern, validator in self._stream_only:
                if method == request.method and pattern.match(path):
                    for line in response.text.splitlines():
                        if errors := sorted(validator.iter_errors(json.loads(line)), key=str):
                            raise ContractViolation(f"{where}: a line breaks the subset: {errors[0].message}")
                    return
            # openapi-core has no deserializer for stream+json: check each line as a one-event JSON array
            for line in response.text.splitlines():
                self._check_response(spec_request, MockResponse(f"[{line}]".encode(), 200), where)
            return
        spec_response = MockResponse(
            response.content, response.status_code, headers=dict(response.headers), content_type=content_type
        )
        try:
            self._check_response(spec_request, spec_response, where)
        except (PathNotFound, OperationNotFound, ResponseNotFound):
            # an unknown path or method, or a status the subset does not declare for the operation
            # (a 404 of getProject, a 502 ...):
            # it must still be an error in Vercel's envelope
            if response.status_code < 400:
                raise ContractViolation(f"{where}: a success status the subset does not declare") from None
            errors = sorted(self._error_schema.iter_errors(response.json()), key=str)
            if errors:
                raise ContractViolation(f"{where}: not a Vercel error body: {errors[0].message}") from None

    def _check_response(self, spec_request: Any, spec_response: Any, where: str) -> None:
        from openapi_core.exceptions import OpenAPIError
        from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
        from openapi_core.templating.responses.exceptions import ResponseNotFound

        try:
            self.openapi.validate_response(spec_request, spec_response)
        except (PathNotFound, OperationNotFound, ResponseNotFound):
            raise
        except OpenAPIError as exc:
            raise ContractViolation(f"{where}: the response breaks the subset: {_why(exc)}") from None


def _multi(items: list[tuple[str, str]]) -> Any:
    from werkzeug.datastructures import MultiDict

    return MultiDict(items)


def _why(exc: BaseException) -> str:
    detail = getattr(exc, "schema_errors", None) or getattr(exc.__cause__, "schema_errors", None)
    if detail:
        return f"{exc}: " + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in detail[:5])
    return f"{type(exc).__name__}: {exc}" + (f" ({exc.__cause__})" if exc.__cause__ else "")


