"""The memory-fit check: what llama.cpp will allocate for given settings, what the machine has, the verdict."""
