"""The blob server, source, store and ``fetch`` fixtures of ``test_download``, for the other engine tests too."""

from test_download import blob, desc, fetch, ingest, server, sleeps, source, store  # noqa: F401
