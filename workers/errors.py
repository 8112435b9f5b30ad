"""One error root for the data plane: every error knows the HTTP status it answers with.

The connection handler catches `ProxyError` at its boundary and writes `status` with a one-line
text body; `close` says whether the connection can go on (framing in doubt -> close).
"""

from __future__ import annotations

__all__ = [
    "ProxyError", "BadRequest", "Forbidden", "ProxyAuthRequired", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "ContentTooLarge", "URITooLong", "ExpectationFailed", "HeadersTooLarge", "NotImplementedCoding",
    "BadGateway", "GatewayTimeout", "VersionNotSupported", "LoopDetected", "UpstreamClosed",
]


class ProxyError(Exception):
    status = 500
    close = True

    def __init__(self, detail: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or "error")
        self.detail = detail or (self.__class__.__doc__ or "error").strip()
        self.headers = headers or []      # extra response fields, e.g. Proxy-Authenticate


class BadRequest(ProxyError):
    """malformed request"""
    status = 400


class Forbidden(ProxyError):
    """forbidden"""
    status = 403
    close = False


class NotFound(ProxyError):
    """not found"""
    status = 404
    close = False


class MethodNotAllowed(ProxyError):
    """method not allowed"""
    status = 405
    close = False


class ProxyAuthRequired(ProxyError):
    """proxy authentication required"""
    status = 407
    close = False


class RequestTimeout(ProxyError):
    """request timeout"""
    status = 408


class ContentTooLarge(ProxyError):
    """request body too large"""
    status = 413


class URITooLong(ProxyError):
    """request line too long"""
    status = 414


class ExpectationFailed(ProxyError):
    """unsupported expectation"""
    status = 417


class HeadersTooLarge(ProxyError):
    """request header fields too large"""
    status = 431


class NotImplementedCoding(ProxyError):
    """not implemented"""
    status = 501


class BadGateway(ProxyError):
    """bad gateway"""
    status = 502
    close = False


class GatewayTimeout(ProxyError):
    """gateway timeout"""
    status = 504
    close = False


class VersionNotSupported(ProxyError):
    """HTTP version not supported"""
    status = 505


class LoopDetected(ProxyError):
    """forwarding loop detected"""
    status = 508
    close = False


class UpstreamClosed(BadGateway):
    """the origin closed the connection before responding"""
