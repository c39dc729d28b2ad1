"""The documentation: every relative link resolves, and the README's quick start runs."""

import re
import unicodedata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: The Markdown files whose links are checked.
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
               *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target), with an optional "title"; <img src="target">.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    text = _FENCE.sub("", text)
    return _CODE_SPAN.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lowercase, without punctuation but
    hyphens and underscores, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(text: str) -> list[str]:
    """Every link and image target of a Markdown text, outside code."""
    text = _strip_code(text)
    return [*_LINK.findall(text), *_REF_DEF.findall(text), *_IMG_SRC.findall(text)]


def broken_links(path: Path) -> list[str]:
    """The relative links and images of ``path`` that do not resolve: a missing file, or
    a ``#anchor`` with no such heading in the Markdown file it points to. Web and mail
    links are not checked."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.name}: {target} (no file {resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.name}: {target} (no heading #{anchor} in {resolved.name})")
    return problems


def test_every_relative_link_and_image_resolves():
    assert len(DOCS) > 5
    problems = [p for path in DOCS for p in broken_links(path)]
    assert problems == []


def test_broken_links_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "figure.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` section: two\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "[ok](other.md) [ok](other.md#a-code-section-two) [ok](#title) ![ok](figure.png)\n"
        "[web](https://example.com/missing.md) `[in code](missing-in-code.md)`\n\n"
        "```\n[in a block](missing-in-block.md)\n```\n\n"
        "[bad](missing.md) ![bad](missing.png) [bad](other.md#no-such-heading) [bad](#nope)\n"
        '<img src="missing-too.png">\n'
    )
    problems = broken_links(page)
    assert len(problems) == 5, problems
    for target in ["missing.md", "missing.png", "other.md#no-such-heading", "#nope",
                   "missing-too.png"]:
        assert any(f": {target} (" in p for p in problems), (target, problems)
    assert github_slug("Compile, export, deploy") == "compile-export-deploy"
    assert github_slug("Results (synthetic, `results/house-numbers/`)") == \
        "results-synthetic-resultshouse-numbers"
    assert github_slug("Backends: fused CPU and GPU kernels") == \
        "backends-fused-cpu-and-gpu-kernels"


def quickstart() -> str:
    """The README's Python block that follows ``<!-- quickstart -->``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("<!-- quickstart -->") == 1
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)^```", readme, re.S | re.M)
    assert match, "no ```python block right after <!-- quickstart --> in README.md"
    return match.group(1)


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    code = quickstart()
    if "onnx" in code:
        pytest.importorskip("onnxscript")  # the `export` extra
    monkeypatch.chdir(tmp_path)  # files the example writes land here
    torch.manual_seed(0)
    exec(compile(code, "README.md:quickstart", "exec"), {"__name__": "__quickstart__"})
