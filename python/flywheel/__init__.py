"""flywheel: the notebook client of a Flywheel cluster.

    from flywheel import Client
    job = Client().submit({"kind": "noop", "shards": 10})
    job.wait(timeout=60)

See docs/python.md. The wire format is docs/protocol.md (flywheel.wire)."""

from .client import (Client, Datasets, FlywheelError, Job, JobFailed, Models, Unavailable, ERRORS,
                     TERMINAL, parse_fwembed)
from .wire import WireError

__all__ = ["Client", "Job", "Datasets", "Models", "FlywheelError", "JobFailed", "Unavailable",
           "WireError", "ERRORS", "TERMINAL", "parse_fwembed"]
__version__ = "0.1.0"
