"""serve: an OpenAI-compatible API for one model, prepared exactly as ``run`` prepares it (pull, fit check)."""

from __future__ import annotations

from collections.abc import Callable

from modelctl.runtime.process import serve as run_server
from modelctl.runtime.server import ServeSpec, check_address
from modelctl.services.run import Prepared


def serve(
    prepared: Prepared,
    *,
    host: str,
    port: int,
    embeddings: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``prepared`` until interrupted; ``on_ready`` gets the API's base URL once the model is loaded."""

    model = prepared.model
    pooling = f"{model.architecture}.pooling_type" if model.architecture else None
    if pooling is not None and pooling in model.gguf_metadata:
        pooling = None  # an embedding model: it pools the way it was trained to
    spec = ServeSpec(
        load=prepared.load,
        model_name=prepared.short,
        host=host,
        port=port,
        embeddings=embeddings,
        mean_pooling_key=pooling,
    )
    worker = prepared.take_worker()
    try:
        check_address(host, port)  # before the worker starts loading
    except BaseException:
        if worker is not None:
            worker.close()
        raise
    run_server(spec, on_ready=on_ready, worker=worker)
