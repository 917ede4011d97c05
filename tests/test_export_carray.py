"""C arrays: exact bytes, alignment, and a header/source pair a C++ compiler accepts."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnets.export import c_array, write_c_array


def _parse(source: str, name: str) -> bytes:
    body = source.split(f"const unsigned char {name}[] = {{", 1)[1].split("};", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_source_holds_exactly_the_bytes(data):
    header, source = c_array(data, "model_data")
    assert _parse(source, "model_data") == data
    assert f"const unsigned int model_data_len = {len(data)};" in source
    assert "extern const unsigned char model_data[];" in header


def test_array_is_const_and_aligned():
    _, source = c_array(b"abc", "m", alignment=32)
    assert "alignas(32) const unsigned char m[] = {" in source


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b", None])
def test_bad_name_is_refused(name):
    with pytest.raises(ValueError, match="not a C identifier"):
        c_array(b"x", name)


def test_bad_alignment_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        c_array(b"x", "m", alignment=12)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_pair_compiles_and_round_trips(tmp_path):
    data = bytes(range(256)) * 3 + b"TFL3"
    h, cc = write_c_array(data, tmp_path / "out", "kws_model")
    assert h.name == "kws_model.h" and cc.name == "kws_model.cc"
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "kws_model.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(kws_model) % 16) return 3;\n"
        "  fwrite(kws_model, 1, kws_model_len, stdout);\n  return 0;\n}\n")
    exe = tmp_path / "a.out"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Werror", "-I", str(h.parent), str(main),
                    str(cc), "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    assert out == data
