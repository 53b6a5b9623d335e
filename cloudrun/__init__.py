"""Python client of the Cloudrun API that wrfbatch serves.

    from cloudrun import Cloudrun

    api = Cloudrun(token)                  # or Cloudrun() with $CLOUDRUN_TOKEN
    run = api.create_run(model="wrf", version="3.9")

Errors are the classes of :mod:`wrfbatch.errors`. This package imports only
httpx, pydantic and wrfbatch's errors and models, never the service.
"""

from wrfbatch import errors
from wrfbatch.models import ComputeOption, InputFile, OutputFile, Run, SetupResult

from ._client import DEFAULT_BASE_URL, FINAL_STATES, Cloudrun, error_from_response

__all__ = [
    "DEFAULT_BASE_URL",
    "FINAL_STATES",
    "Cloudrun",
    "ComputeOption",
    "InputFile",
    "OutputFile",
    "Run",
    "SetupResult",
    "error_from_response",
    "errors",
]
