"""The FastAPI application of the Cloudrun API.

:func:`create_app` builds the app. Its lifespan starts the background poller,
which first reconciles runs left over from a previous service process. On
shutdown it stops the poller and closes the run manager if the app created it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..config import Settings
from .context import ServiceContext
from .errors import install_error_handlers
from .middleware import RequestMiddleware
from .poller import Poller
from .routes import router

if TYPE_CHECKING:
    from ..runs import RunManager

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Run WRF simulations on a Slurm cluster. Authenticate every request with "
    "`Authorization: Bearer <token>`. Errors are JSON: "
    '`{"error": {"code": ..., "message": ...}}`.'
)


def create_app(
    settings: Settings, manager: RunManager | None = None, *, poll: bool = True
) -> FastAPI:
    """Build the service for ``settings``.

    Without ``manager``, the app opens a :class:`RunManager` (and its store)
    and closes it on shutdown; a manager passed in stays open. With
    ``poll=False`` no poller runs, so run states change only through requests.
    """
    if manager is None:
        from ..runs import RunManager

        manager = RunManager(settings)
        owns_manager = True
    else:
        owns_manager = False
    context = ServiceContext(settings, manager)
    app = FastAPI(
        title="wrfbatch Cloudrun API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(context, poll, owns_manager),
    )
    app.state.context = context
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware)
    app.include_router(router)
    return app


def _lifespan(
    context: ServiceContext, poll: bool, owns_manager: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poller = _make_poller(context) if poll else None
        if poller is not None:
            poller.start()
        logger.info("service started with clusters %s", ", ".join(context.settings.clusters))
        try:
            yield
        finally:
            if poller is not None:
                await run_in_threadpool(poller.stop)
            if owns_manager:
                await run_in_threadpool(context.manager.close)
            logger.info("service stopped")

    return lifespan


def _make_poller(context: ServiceContext) -> Poller:
    service = context.settings.service
    return Poller(
        refresh=context.manager.refresh,
        leases=context.store,
        clusters=list(context.settings.clusters),
        interval_s=service.poll_interval_s,
        max_backoff_s=service.poll_max_backoff_s,
        on_start=context.manager.reconcile,
    )
