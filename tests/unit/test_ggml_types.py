"""modelctl's ggml type tables agree with the installed gguf package, and the header parser uses them without it."""

from __future__ import annotations

import subprocess
import sys

import gguf

from modelctl import gguf as parser
from modelctl.ggml_types import FILE_TYPE_NAMES, QUANT_SIZES, TYPE_NAMES


def test_the_tables_agree_with_the_gguf_package() -> None:
    sizes = {int(k): (int(v[0]), int(v[1])) for k, v in gguf.GGML_QUANT_SIZES.items()}
    assert {k: sizes[k] for k in QUANT_SIZES} == QUANT_SIZES  # every type the table knows, as the package says
    assert {k: t.name for k in TYPE_NAMES for t in [gguf.GGMLQuantizationType(k)]} == TYPE_NAMES
    assert {k: t.name for k in FILE_TYPE_NAMES for t in [gguf.LlamaFileType(k)]} == FILE_TYPE_NAMES


def test_names_and_sizes_as_before() -> None:
    assert parser.type_sizes(12) == (256, 144)  # Q4_K
    assert parser.ggml_type_name(3) == "Q4_1"
    assert parser.file_type_name(15) == "Q4_K_M"
    assert parser.file_type_name(15 | 1024) == "Q4_K_M"  # LLAMA_FTYPE_GUESSED
    assert parser.file_type_name(0) == "F32"


def test_known_types_do_not_import_the_gguf_package() -> None:
    code = (
        "import sys; from modelctl import gguf as g; g.type_sizes(12); g.ggml_type_name(3); g.file_type_name(15); "
        "print('gguf' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
