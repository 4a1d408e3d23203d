"""The runtime: the one package that talks to llama.cpp (through llama-cpp-python), always imported lazily.

``conversation`` holds the chat as values (messages, sampling, the trimming rule) and needs no llama.cpp;
``engine`` loads a GGUF with given settings, streams chat and text completions with timing stats and embeds;
``worker`` runs an engine in a child process and ``process`` drives it from the parent (crash isolation).
Importing this package costs nothing: ``llama_cpp`` is imported inside the functions that need it.
"""
