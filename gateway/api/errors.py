"""Refusals with a machine-readable code, so that a console can say them in its own language.

The body stays compatible with FastAPI's ``{"detail": "..."}`` (the English text) and adds
``{"error": {"code": ..., "message": ..., **params}}``: docs/api.md lists the codes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse


class CodedError(HTTPException):
    """An HTTP refusal carrying ``code`` (snake_case, stable) and parameters for its translation."""

    def __init__(self, status_code: int, code: str, message: str, **params: Any) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.params = params


def error_body(code: str, message: str, **params: Any) -> dict[str, Any]:
    return {"detail": message, "error": {"code": code, "message": message, **params}}


def install(app: FastAPI) -> None:
    @app.exception_handler(CodedError)
    async def coded(_request: Request, exc: CodedError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc.detail), **exc.params), status_code=exc.status_code,
                            headers=exc.headers)
