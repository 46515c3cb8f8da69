"""Reads the fenced blocks of a Markdown file and runs them the way a reader would paste them.

Rules a page must follow (checked by tests/docs/test_snippets.py):

- Every fenced block names its language. `sh`/`bash`/`shell` blocks run in bash, `python` blocks
  with the project's Python, `js`/`javascript`/`mjs` blocks with Node (as ES modules), one after
  the other in page order. Variables a shell block sets are seen by every later block of the page
  (each block runs with `set -a`, so its assignments are exported). `json` and `yaml` blocks must
  parse. `text` blocks are pictures or sample output, not code.
- `export NAME=...` lines for a name the reader sets to their own installation's value (GW, MK,
  KEY, ...: see READER_VARIABLES) are left out: the suite supplies those values.
- Every `curl` must get an HTTP status below 400, unless the line right before the block is
  `<!-- status: 200 429 -->`: then its curls must get exactly these statuses, in order.
- `<!-- run: receiver -->` before a python or js block: it is a webhook receiver listening on
  `$PORT` that verifies with `$WEBHOOK_SECRET`, prints each event's idempotencyKey once when it
  bills it, and is driven with real signed deliveries from the gateway.
- `<!-- not-run: why -->` before a block: it cannot run in a test (a production start command,
  say); the reason is required and such blocks are counted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SHELL = frozenset({"sh", "bash", "shell"})
PYTHON = frozenset({"python", "py"})
NODE = frozenset({"js", "javascript", "mjs", "node"})
DATA = frozenset({"json", "yaml", "yml"})
TEXT = frozenset({"text"})
READER_VARIABLES = ("GW", "MK", "KEY", "UPSTREAM", "SECRET_ID", "ED25519_KEY")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
_NOTE = re.compile(r"^\s*<!--\s*(?P<kind>not-run|status|run)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_READER_EXPORT = re.compile(rf"^\s*export\s+({'|'.join(READER_VARIABLES)})=.*$", re.MULTILINE)
BLOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language, its text and the note right before it."""

    path: Path
    line: int
    language: str
    text: str
    note: tuple[str, str] | None = None

    @property
    def where(self) -> str:
        """`file:line` for messages."""
        return f"{self.path.name}:{self.line}"

    @property
    def not_run(self) -> str | None:
        """The reason given for not running it, if any."""
        return self.note[1] if self.note and self.note[0] == "not-run" else None

    @property
    def receiver(self) -> bool:
        """Whether it is a webhook receiver to drive with deliveries."""
        return self.note == ("run", "receiver")

    @property
    def statuses(self) -> list[str] | None:
        """The HTTP statuses its curls must get, if the page says which."""
        return self.note[1].split() if self.note and self.note[0] == "status" else None


def blocks_read(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the HTML comment on the line before it."""
    lines = path.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body, end = [], index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end].removeprefix(indent))
            end += 1
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        note = _NOTE.match(previous)
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                language=opening["info"].lower(),
                text="\n".join(body) + "\n",
                note=(note["kind"], note["value"]) if note else None,
            )
        )
        index = end + 1
    return blocks


def block_problem(block: Block) -> str | None:
    """Why a block breaks the page rules, or None."""
    known = SHELL | PYTHON | NODE | DATA | TEXT
    if block.language not in known:
        return f"{block.where}: name the block's language (one of {sorted(known)})"
    if block.note and block.note[0] == "not-run" and not block.note[1]:
        return f"{block.where}: a not-run note needs its reason"
    if block.receiver and block.language not in PYTHON | NODE:
        return f"{block.where}: only python and js blocks can be receivers"
    if block.statuses is not None and block.language not in SHELL:
        return f"{block.where}: a status note belongs before a shell block"
    return None


# Runs before each block: exports what earlier blocks set, and a curl that checks statuses.
_PRELUDE = r"""
set -eo pipefail
set -a
source "$DOCS_STATE"
curl() {
    local out code
    out=$(mktemp)
    command curl --max-time 30 "$@" -w '%{stderr}\n@@status %{http_code}\n' 2>"$out" || {
        local rc=$?; grep -v '^@@status' "$out" >&2; rm -f "$out"; return $rc; }
    code=$(sed -n 's/^@@status //p' "$out" | tail -n 1)
    grep -v '^@@status' "$out" | sed '/^$/d' >&2 || true
    rm -f "$out"
    if [ -s "$DOCS_EXPECT" ]; then
        local want; want=$(head -n 1 "$DOCS_EXPECT"); sed -i 1d "$DOCS_EXPECT"
        if [ "$code" != "$want" ]; then
            echo "docs: curl $* got HTTP $code, the page says $want" >&2; return 22; fi
    elif [ "$code" -ge 400 ]; then
        echo "docs: curl $* got HTTP $code" >&2; return 22
    fi
}
"""
_EPILOGUE = r"""
if [ -s "$DOCS_EXPECT" ]; then
    echo "docs: the page names statuses no curl got: $(tr '\n' ' ' < "$DOCS_EXPECT")" >&2; exit 1
fi
export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_)=' > "$DOCS_STATE.next"
mv "$DOCS_STATE.next" "$DOCS_STATE"
"""


@dataclass
class PageRun:
    """Runs one page's blocks in order in `workdir`, sharing variables through a state file."""

    workdir: Path
    env: dict[str, str]
    node_modules: Path | None = None
    ran: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.workdir / "state.sh"
        self.expect = self.workdir / "expect"
        lines = [f"export {name}={_quote(value)}" for name, value in self.env.items()]
        self.state.write_text("\n".join(lines) + "\n")
        if self.node_modules is not None and not (self.workdir / "node_modules").exists():
            (self.workdir / "node_modules").symlink_to(self.node_modules)

    def shell(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run a shell block; its exports carry over to the next blocks."""
        self.expect.write_text("".join(f"{s}\n" for s in block.statuses or []))
        text = _READER_EXPORT.sub(r"# (set by the suite) \g<0>", block.text)
        return self._bash(_PRELUDE + f"\n# {block.where}\n" + text + _EPILOGUE, block)

    def program(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run a python or js block to its end, with the variables set so far."""
        return self._bash(_PRELUDE + f"exec {self._command(block)}\n", block)

    def server(self, block: Block, extra: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start a receiver block, its output going to `log`; the caller stops it."""
        script = _PRELUDE + "".join(f"export {k}={_quote(v)}\n" for k, v in extra.items())
        with log.open("wb") as out:
            return subprocess.Popen(
                ["bash", "-c", script + f"exec {self._command(block)}\n"],
                cwd=self.workdir,
                env=self._environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _command(self, block: Block) -> str:
        number = len(self.ran) + 1
        self.ran.append(block)
        if block.language in PYTHON:
            path = self.workdir / f"block_{number}.py"
            path.write_text(block.text)
            return f"{_quote(sys.executable)} {path.name}"
        path = self.workdir / f"block_{number}.mjs"
        path.write_text(block.text)
        return f"node {path.name}"

    def _bash(self, script: str, block: Block) -> subprocess.CompletedProcess[str]:
        if block.language in SHELL:
            self.ran.append(block)
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.workdir,
            env=self._environ(),
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )

    def _environ(self) -> dict[str, str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {
            **os.environ,
            "PATH": path,
            "DOCS_STATE": str(self.state),
            "DOCS_EXPECT": str(self.expect),
        }


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def failure_text(block: Block, done: subprocess.CompletedProcess[str]) -> str:
    """What to show when a block fails."""
    return (
        f"{block.where} ({block.language}) exited {done.returncode}\n--- block ---\n{block.text}"
        f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    )
