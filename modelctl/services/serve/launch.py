"""Starting the server: bind the address, prepare the model named on the command line, run until a signal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from modelctl.config import Config
from modelctl.services.run import prepare
from modelctl.services.serve.app import listen, run
from modelctl.services.serve.budget import Budget
from modelctl.services.serve.options import ServeOptions
from modelctl.services.serve.pool import Event
from modelctl.services.system import runtime_machine

if TYPE_CHECKING:
    from modelctl.services.pull import Reporter


def serve(
    config: Config,
    options: ServeOptions,
    reporter: Reporter,
    *,
    on_ready: Callable[[str], None] | None = None,
    on_event: Event | None = None,
    on_note: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. The address is bound first (UsageError, exit 2, if it cannot be); then
    ``options.model``, if any, is pulled when missing, fit-checked (DoesNotFit, exit 6) and loaded; then
    ``on_ready`` gets the base URL."""
    options.check()
    sock = listen(options.host, options.port)
    try:
        budget = Budget(lambda: runtime_machine().devices, memory=options.memory)
        preload = None
        if options.model is not None:
            run_options = replace(options.run, devices=budget.devices({}))
            preload = prepare(config, options.model, run_options, reporter)
            for note in preload.notes:
                if on_note is not None:
                    on_note(note)
        run(config, options, sock=sock, budget=budget, preload=preload, on_ready=on_ready, on_event=on_event)
    finally:
        sock.close()
