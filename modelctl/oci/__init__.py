"""OCI primitives (media types, descriptors, manifests) and the registry client."""

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    # httpx imports its own command-line client (click, rich, pygments) when it is imported: 80-140 ms on every
    # network command here, for code modelctl never runs. A None entry makes that optional import fail, and httpx
    # falls back to a stub ``httpx.main``; the library itself is unchanged.
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
