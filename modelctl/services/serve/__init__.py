"""serve: every model in the store behind one HTTP endpoint, loaded on demand within what the fit check allows.

The pieces, from the request in: :mod:`.guard` (API key, Host, Origin), the APIs (:mod:`.openai_api`,
:mod:`.ollama_api`, :mod:`.anthropic_api`, and modelctl's own :mod:`.admin` with the chat page), :mod:`.pool`
(the loaded models, their queues, loading and unloading), :mod:`.scheduler` (which models go to make room),
:mod:`.budget` (how much memory the server may use), :mod:`.catalog` (names to models and their load settings).
:mod:`.launch` starts it all; :mod:`.client` is what ``modelctl ps`` and ``stop`` use to ask a running server.
Nothing is imported here, so that ``ps`` does not load the server's machinery.
"""
