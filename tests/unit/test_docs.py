"""The repository explains itself: every document the code cites is in docs/, every section it
names exists, and every relative link of README.md and docs/*.md resolves."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODE_DIRS = ("arbpipe", "bench", "procs", "shm_layouts", "tests", "config", "scripts")
CITATION = re.compile(r'(docs/[\w-]+\.md)(?:, "([^"]+)")?')
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MD_NAME = re.compile(r"\b[\w-]+\.md\b")


def _code_files():
    for d in CODE_DIRS:
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".py", ".toml")) and f != os.path.basename(__file__):
                    yield os.path.join(base, f)


def _headings(path):
    with open(path) as f:
        return {line.lstrip("#").strip() for line in f if line.startswith("#")}


def test_citations_resolve_to_docs_sections():
    cited, missing = 0, []
    for path in _code_files():
        text = open(path, encoding="utf-8").read()
        for m in CITATION.finditer(text):
            cited += 1
            doc = os.path.join(ROOT, m.group(1))
            section = " ".join(m.group(2).split()) if m.group(2) else None  # may wrap a line
            if not os.path.exists(doc):
                missing.append(f"{path}: {m.group(1)} does not exist")
            elif section and section not in _headings(doc):
                missing.append(f"{path}: {m.group(1)} has no section {section!r}")
    assert cited > 10, "the citation pattern found almost nothing: is the regex still right?"
    assert not missing, "\n".join(missing)


def test_code_cites_no_document_outside_the_repo():
    outside = []
    for path in _code_files():
        for line in open(path, encoding="utf-8"):
            for name in MD_NAME.findall(line):
                if f"docs/{name}" not in line and name not in ("pipeline.md", "README.md", "report.md"):
                    outside.append(f"{os.path.relpath(path, ROOT)}: {line.strip()}")
    assert not outside, "\n".join(outside)


def test_readme_and_docs_links_resolve():
    pages = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))
        if f.endswith(".md")]
    assert {"design.md", "venues.md", "operations.md"} <= {os.path.basename(p) for p in pages}
    broken = []
    for page in pages:
        for target in LINK.findall(open(page, encoding="utf-8").read()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not os.path.exists(os.path.join(os.path.dirname(page), target)):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not broken, "\n".join(broken)
