"""The runtime: the one package that talks to llama.cpp (through llama-cpp-python), always imported lazily.

``conversation`` holds the chat as values (messages, sampling, the trimming rule) and needs no llama.cpp;
``engine`` loads a GGUF with given settings and streams chat completions with timing stats;
``server`` serves a loaded GGUF through llama-cpp-python's own OpenAI-compatible server.
Importing this package costs nothing: ``llama_cpp`` is imported inside the functions that need it.
"""
