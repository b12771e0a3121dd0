"""Advice given in several places says the same thing everywhere: the key file's mode on
Kubernetes (docs, example manifests, the FileProvider's own warning), the readiness
probe (README and the example manifests), and the tests the docs name as proof exist."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from scaling_credentials import FileProvider

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
K8S_EXAMPLES = ROOT / "examples" / "kubernetes"
# Everything a user reads: the docs, the examples, and the library's own messages.
TEXTS = sorted(
    {
        *ROOT.glob("*.md"),
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("examples/**/*.md"),
        *ROOT.glob("examples/**/*.yaml"),
        *ROOT.glob("examples/**/*.py"),
        *ROOT.glob("providers/*/README.md"),
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("providers/*/src/**/*.py"),
    }
)


def fenced(path: Path, language: str) -> list[str]:
    """The ```language blocks of a Markdown file."""
    pattern = re.compile(rf"^```{language}[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return pattern.findall(path.read_text(encoding="utf-8"))


def deployments(pattern: str = "*.yaml") -> list[dict[str, Any]]:
    found = []
    for manifest in sorted(K8S_EXAMPLES.glob(pattern)):
        for document in yaml.safe_load_all(manifest.read_text(encoding="utf-8")):
            if document and document.get("kind") == "Deployment":
                found.append(document)
    return found


# --------------------------------------------------------------------------- key file mode


def file_provider_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> str:
    path = tmp_path / "api-key"
    path.write_text("scl_live_" + "0123456789abcdef")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.file"):
        FileProvider(str(path)).fetch()
    (record,) = [r for r in caplog.records if r.name == "scaling_credentials.file"]
    return record.getMessage()


def test_the_example_pod_needs_0440_with_fs_group() -> None:
    """The example secret volume: a non-root pod reads a root-owned file through its
    group, so the mode is 0440 and fsGroup is set (0400 would lock the app out)."""
    (deployment,) = deployments("*secret-volume.yaml")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["fsGroup"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o440


def test_every_secret_volume_mode_advice_says_0440_with_fs_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    warning = file_provider_warning(tmp_path, caplog)
    assert "defaultMode: 0440" in warning and "fsGroup" in warning, warning
    texts = {"the FileProvider warning": warning}
    texts.update({str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in TEXTS})
    wrong = []
    for where, text in texts.items():
        for mode in re.findall(r"defaultMode:\W*(0?\d{3,4})", text):
            if mode.lstrip("0") != "440":
                wrong.append(f"{where}: defaultMode {mode}")
    assert not wrong, (
        "a Kubernetes secret volume's files belong to root; the example pod runs as uid "
        "10001 and reads them through fsGroup, so the advice is defaultMode: 0440 with the "
        "pod's fsGroup:\n" + "\n".join(wrong)
    )


# --------------------------------------------------------------------------- readiness probe


def test_readme_probe_is_the_examples_probe() -> None:
    probes = [
        container["readinessProbe"]
        for deployment in deployments()
        for container in deployment["spec"]["template"]["spec"]["containers"]
    ]
    assert probes
    documented = []
    for path in (ROOT / "README.md", K8S_EXAMPLES / "README.md"):
        for block in fenced(path, "yaml"):
            found = yaml.safe_load(block)
            stack = [found]
            while stack:  # every readinessProbe, at any depth
                item = stack.pop()
                if isinstance(item, dict):
                    if "readinessProbe" in item:
                        documented.append((path.relative_to(ROOT), item["readinessProbe"]))
                    stack.extend(item.values())
                elif isinstance(item, list):
                    stack.extend(item)
    assert len(documented) >= 2
    keys = ("periodSeconds", "timeoutSeconds")
    for probe in probes:
        command = probe["exec"]["command"]
        for where, shown in documented:
            assert shown["exec"]["command"] == command, where
            assert {k: shown.get(k) for k in keys} == {k: probe[k] for k in keys}, (
                f"{where}: the probe's timings differ from examples/kubernetes/*.yaml"
            )


# --------------------------------------------------------------------------- named tests

# `path/to/test_x.py`, `path/to/test_x.py::test_name`, or `::test_name` after a path on the
# same line (a table cell naming several tests of one file).
TEST_REFERENCE = re.compile(
    r"`(?P<path>(?:tests|providers|benchmarks)/[\w./-]+\.py)?(?:::(?P<name>\w+))?`"
)


def test_every_test_the_docs_name_exists() -> None:
    """Where the docs name a test as the proof of a claim, the test is there: a renamed or
    moved test fails here, not in front of a reader."""
    missing = []
    for path in TEXTS:
        if path.suffix != ".md":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            current: str | None = None
            for match in TEST_REFERENCE.finditer(line):
                where = f"{path.relative_to(ROOT)}:{number}"
                if match["path"]:
                    current = match["path"]
                    if not (ROOT / current).is_file():
                        missing.append(f"{where}: {current} does not exist")
                        current = None
                        continue
                name = match["name"]
                if name is None or current is None:
                    continue
                source = (ROOT / current).read_text(encoding="utf-8")
                if not re.search(rf"^\s*(?:async def|def|class) {name}\b|^{name} = ", source, re.M):
                    missing.append(f"{where}: {current} has no {name}")
    assert not missing, "the docs name tests that do not exist:\n" + "\n".join(missing)
