"""codec/api_table.py must be exactly what tools/gen_api_table.py generates from kio now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map

from codec.api_table import API_TABLE

ROOT = Path(__file__).resolve().parents[2]


def test_file_is_what_the_generator_prints() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_api_table.py")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert (ROOT / "codec" / "api_table.py").read_text() == generated, (
        "codec/api_table.py is stale: run python tools/gen_api_table.py > codec/api_table.py"
    )


def test_table_matches_kio_schema_index() -> None:
    expected = {}
    for key, name in api_key_map.items():
        versions = sorted(schema_name_map[name])
        flexible = [v for v in versions if load_request_schema(key, v).__flexible__]
        expected[key] = (name, versions[0], versions[-1], flexible[0] if flexible else None)
    assert expected == API_TABLE


def test_request_and_response_flexibility_agree() -> None:
    """The table stores one first-flexible version per API; responses must agree."""
    for key, (name, lo, hi, first_flexible) in API_TABLE.items():
        for version in range(lo, hi + 1):
            flexible = first_flexible is not None and version >= first_flexible
            assert load_response_schema(key, version).__flexible__ == flexible, (name, version)
