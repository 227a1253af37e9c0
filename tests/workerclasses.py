"""gunicorn worker classes for tests: huimages' worker with test-sized timeouts.

Named on gunicorn's command line (``-k tests.workerclasses.LingeringWorker``),
so this module imports nothing from the test suite.
"""

from huimages_wsgi.deploy.worker import GuardedThreadWorker


class LingeringWorker(GuardedThreadWorker):
    """A linger long enough to send the next head in pieces within it, and short
    header and body timeouts, so every path of a kept-alive connection can be
    driven by hand."""

    keepalive_linger = 1.0
    header_timeout = 1.5
    body_timeout = 1.0


class LongLingeringWorker(LingeringWorker):
    """A linger far longer than any answer takes: a thread that wrongly waited it out
    would be seen."""

    keepalive_linger = 5.0
