"""flywheel: the notebook client of a Flywheel cluster.

    from flywheel import Client
    job = Client().submit({"kind": "noop", "shards": 10})
    job.wait(timeout=60)

See docs/python.md. The wire format is docs/protocol.md (flywheel.wire)."""

from .client import Client, FlywheelError, Job, JobFailed, Unavailable, ERRORS, TERMINAL
from .wire import WireError

__all__ = ["Client", "Job", "FlywheelError", "JobFailed", "Unavailable", "WireError", "ERRORS",
           "TERMINAL"]
__version__ = "0.1.0"
