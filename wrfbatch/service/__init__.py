"""The HTTP service: the Cloudrun API over the run lifecycle library."""

from .app import create_app

__all__ = ["create_app"]
