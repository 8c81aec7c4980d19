"""The exception tree. Core code raises only these; adapters map them by class.

::

    BendiError                      500 internal_error
    ├── InvalidRequest              400 invalid_request
    │   ├── ContextLengthExceeded   400 context_length_exceeded
    │   ├── UnsupportedParameter    400 unsupported_parameter
    │   ├── RequestTooLarge         413 request_too_large
    │   └── UnsupportedMediaType    415 unsupported_media_type
    ├── AuthenticationError         401 invalid_api_key
    ├── PermissionDenied            403 permission_denied
    │   ├── BadSignature            403 bad_signature
    │   └── CrossSiteRefused        403 cross_site_refused
    ├── NotFound                    404 not_found
    │   ├── ModelNotFound           404 model_not_found
    │   └── KnowledgeBaseNotFound   404 kb_not_found
    ├── Conflict                    409 conflict
    ├── InvalidModelFile            422 invalid_model_file
    │   ├── DigestMismatch          422 digest_mismatch
    │   └── InvalidBundle           422 invalid_bundle
    ├── DocumentError               422 document_error
    ├── TemplateError               422 template_error
    ├── RateLimited                 429 rate_limited
    ├── NotAvailableOffline         501 not_available_offline
    ├── InsufficientMemory          507 insufficient_memory
    ├── InsufficientStorage         507 insufficient_storage
    ├── SourceError                 502 source_error
    ├── Cancelled                   499 cancelled
    ├── ServerBusy                  503 server_busy
    ├── EngineError                 500 engine_error
    └── HTTPError                   (its own status) http_error: an HTTP status passed through
                                    from the web framework (405 method not allowed, ...)
"""

from __future__ import annotations


class BendiError(Exception):
    """Base of every error bendi raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    #: OpenAI's coarse error "type" for this class.
    kind: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: seconds a client should wait before retrying (429, 503); None: the adapter's default
        self.retry_after = retry_after


class InvalidRequest(BendiError):
    status, code, kind = 400, "invalid_request", "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class RequestTooLarge(InvalidRequest):
    status, code = 413, "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    status, code = 415, "unsupported_media_type"


class AuthenticationError(BendiError):
    status, code, kind = 401, "invalid_api_key", "authentication_error"


class PermissionDenied(BendiError):
    status, code, kind = 403, "permission_denied", "permission_error"


class CrossSiteRefused(PermissionDenied):
    """A request a web page made the browser send: a foreign Host (DNS rebinding) or Origin."""

    code = "cross_site_refused"


class NotFound(BendiError):
    status, code, kind = 404, "not_found", "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class KnowledgeBaseNotFound(NotFound):
    code = "kb_not_found"


class Conflict(BendiError):
    status, code, kind = 409, "conflict", "invalid_request_error"


class InvalidModelFile(BendiError):
    status, code, kind = 422, "invalid_model_file", "invalid_request_error"


class DocumentError(BendiError):
    status, code, kind = 422, "document_error", "invalid_request_error"


class TemplateError(BendiError):
    status, code, kind = 422, "template_error", "invalid_request_error"


class RateLimited(BendiError):
    status, code, kind = 429, "rate_limited", "rate_limit_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, param=param)
        #: seconds until a retry can succeed (sent as Retry-After)
        self.retry_after = retry_after


class NotAvailableOffline(BendiError):
    status, code, kind = 501, "not_available_offline", "invalid_request_error"


class InsufficientMemory(BendiError):
    status, code, kind = 507, "insufficient_memory", "server_error"


class ServerBusy(BendiError):
    status, code, kind = 503, "server_busy", "server_error"


class EngineError(BendiError):
    status, code, kind = 500, "engine_error", "server_error"


class HTTPError(BendiError):
    """A status the web framework decided (405, 415, ...), passed through in the dialect's shape."""

    code = "http_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = "invalid_request_error" if status < 500 else "server_error"


class DigestMismatch(InvalidModelFile):
    """Bytes received (a pull) do not have the sha256 their source announced."""

    code = "digest_mismatch"


class InvalidBundle(InvalidModelFile):
    """Not a usable bundle: damaged, tampered, truncated, or from a newer bendi."""

    code = "invalid_bundle"


class BadSignature(PermissionDenied):
    """A bundle's signature is missing, wrong, or by a key that is not trusted."""

    code = "bad_signature"


class InsufficientStorage(BendiError):
    status, code, kind = 507, "insufficient_storage", "server_error"


class SourceError(BendiError):
    """A configured pull source failed: unreachable, refused, or answered something unexpected."""

    status, code, kind = 502, "source_error", "server_error"


class Cancelled(BendiError):
    """The caller stopped the work (Ctrl-C, a client that went away); what was done is kept."""

    status, code, kind = 499, "cancelled", "invalid_request_error"
