"""The mParticle Events API compatible HTTP layer: app, authentication, responses, server."""

from s3forward.api.app import Handler, IngestApp, Readiness, Request
from s3forward.api.auth import Authenticator, BadCredentials, MissingCredentials
from s3forward.api.responses import Response, json_response
from s3forward.api.server import make_uvicorn_server

__all__ = [
    "Authenticator",
    "BadCredentials",
    "Handler",
    "IngestApp",
    "MissingCredentials",
    "Readiness",
    "Request",
    "Response",
    "json_response",
    "make_uvicorn_server",
]
