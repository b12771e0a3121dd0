"""The shape of the code base: provider distributions and examples are built from the
core's public names only (the toolkit included), as a third-party provider would be."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_THE_CORE = [ROOT / "providers" / "aws" / "src", ROOT / "providers" / "vault" / "src"]
OUTSIDE_THE_CORE.append(ROOT / "examples")
PRIVATE = re.compile(r"\bscaling_credentials\._\w+")


def test_nothing_outside_the_core_imports_a_private_core_module() -> None:
    found = []
    for top in OUTSIDE_THE_CORE:
        for path in sorted(top.rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if PRIVATE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "use a public name (scaling_credentials.toolkit?):\n" + "\n".join(found)
