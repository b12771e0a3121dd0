"""MkDocs hooks: the site shows the repository's documentation as it reads on GitHub.

- README.md is the home page (``index.md``); ``docs/`` holds the other pages.
- Every repository file a page links to (SECURITY.md, the examples, benchmarks/README.md)
  joins the site, and so do the files those pages link to; a link to a directory goes to
  its README.md.
- Links are rewritten from repository paths to site paths. A link to a file that does not
  exist is left alone, so ``mkdocs build --strict`` fails on it.

Nothing here needs changing when a page is added or edited.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOME = "README.md"
LINK = re.compile(r"(?P<head>!?\[[^\]\n]*\]\()(?P<target>[^)\s]+)(?P<tail>(?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", re.IGNORECASE)


def site_uri(repo_path: str) -> str:
    """Where a repository file lives in the site."""
    if repo_path == HOME:
        return "index.md"
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    return repo_path


def repo_path_of(file: File) -> str:
    return Path(str(file.abs_src_path)).resolve().relative_to(ROOT).as_posix()


def resolve(source_repo_path: str, target: str) -> tuple[str, str] | None:
    """(repository path, fragment) of a relative link, or None when it leaves the repo,
    is not relative, or names nothing that exists."""
    if EXTERNAL.match(target):
        return None
    path, _, fragment = target.partition("#")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(source_repo_path), path))
    if joined.startswith("../") or joined == "..":
        return None
    full = ROOT / joined
    if full.is_dir() and (full / "README.md").is_file():
        joined = posixpath.join(joined, "README.md") if joined != "." else "README.md"
    elif not full.is_file():
        return None
    return joined, fragment


def links(text: str) -> list[str]:
    return [m["target"] for m in LINK.finditer(FENCE.sub("", text))]


def on_files(files: Files, config: Any) -> Files:
    nav_entries = set(re.findall(r"[\w./-]+\.md", str(config.get("nav") or "")))
    home = File.generated(config, "index.md", abs_src_path=str(ROOT / HOME))
    files.append(home)
    queue = [HOME, *(repo_path_of(f) for f in files.documentation_pages() if f is not home)]
    seen = set(queue)
    while queue:
        current = queue.pop()
        if not current.endswith(".md"):
            continue
        for target in links((ROOT / current).read_text(encoding="utf-8")):
            found = resolve(current, target)
            if found is None or found[0] in seen:
                continue
            repo_path = found[0]
            seen.add(repo_path)
            uri = site_uri(repo_path)
            if files.get_file_from_path(uri) is not None:
                continue
            inclusion = InclusionLevel.INCLUDED if uri in nav_entries else InclusionLevel.NOT_IN_NAV
            files.append(
                File.generated(config, uri, abs_src_path=str(ROOT / repo_path), inclusion=inclusion)
            )
            queue.append(repo_path)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    source = repo_path_of(page.file)
    here = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        found = resolve(source, match["target"])
        if found is None:
            return match.group(0)
        repo_path, fragment = found
        target = os.path.relpath(site_uri(repo_path), here or ".").replace(os.sep, "/")
        return match["head"] + target + (f"#{fragment}" if fragment else "") + match["tail"]

    parts = []
    position = 0
    for fence in FENCE.finditer(markdown):  # code blocks are left as they are
        parts.append(LINK.sub(rewrite, markdown[position : fence.start()]))
        parts.append(fence.group(0))
        position = fence.end()
    parts.append(LINK.sub(rewrite, markdown[position:]))
    return "".join(parts)
