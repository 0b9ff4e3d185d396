"""The documentation stays true: every ``autotune ...`` command line in README.md and docs/*.md
parses with the current CLI, the README's install and test commands are the ones CI runs, the
README stays short, and relative links point at files that exist.

Commands are parsed, never run: each goes through the parser ``autotune`` itself builds
(``autotune.cli``), so a flag that does not exist, a missing required option or a bad value for a
typed option fails here with the file and line that wrote it.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

from autotune import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220  # issue 21: a README a newcomer reads in five minutes

_FENCE = re.compile(r"^\s*(```|~~~)")
# a command starts with `autotune` (or a path ending in /autotune, or `python -m autotune`),
# optionally after a prompt, environment assignments or a wrapper such as nohup
_PREFIX = r"^(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:(?:nohup|time|env|exec)\s+)*"
_START = re.compile(_PREFIX + r"(?:\S*/)?(?:autotune|python3?\s+-m\s+autotune)(?:\s|$)")
_PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_.-]*)>")  # runs/<study> -> runs/study
_SEPARATORS = {"|", "||", "&&", ";", "&"}
_REDIRECTS = {">", ">>", "<", ">&", "&>", "<<", "<<<", ">|"}


class DocCommand(NamedTuple):
    path: Path
    line: int  # 1-based, where the command starts
    text: str  # the command as written (continuations joined)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced code block."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m and fence is None:
            fence = m.group(1)
        elif m and line.strip().startswith(fence or "```"):
            fence = None
        elif fence is not None:
            out.append((number, line))
    return out


def extract_commands(text: str, path: Path = README) -> list[DocCommand]:
    """Every ``autotune`` command line in the fenced code blocks of a markdown text."""
    found: list[DocCommand] = []
    lines = _code_lines(text)
    i = 0
    while i < len(lines):
        number, line = lines[i]
        logical = line
        # join `\` continuations (consecutive lines of the same block)
        while logical.rstrip().endswith("\\") and i + 1 < len(lines) and lines[i + 1][0] == lines[i][0] + 1:
            i += 1
            logical = logical.rstrip()[:-1] + " " + lines[i][1].strip()
        i += 1
        stripped = logical.strip()
        if _START.match(stripped):
            found.append(DocCommand(path, number, stripped))
    return found


def argv_of(command: str) -> list[str]:
    """The argument list ``autotune`` would get: comments, prompts, prefixes, shell operators,
    redirections and optional-part brackets (``[--json]``) dropped, placeholders filled in."""
    command = _PLACEHOLDER.sub(lambda m: m.group(1), command)
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    words: list[str] = []
    skip_next = False
    for k, tok in enumerate(tokens):
        if skip_next:
            skip_next = False
            continue
        if tok in _SEPARATORS:
            break  # only the first command of a pipeline or list
        if tok in _REDIRECTS:
            skip_next = True
            continue
        if tok.isdigit() and k + 1 < len(tokens) and tokens[k + 1] in _REDIRECTS:
            continue  # the 2 of 2>log
        words.append(tok)
    if words and words[0] == "$":
        words = words[1:]
    while words and (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]) or words[0] in ("nohup", "time", "env", "exec")
    ):
        words = words[1:]
    if len(words) >= 3 and words[0] in ("python", "python3") and words[1:3] == ["-m", "autotune"]:
        words = words[2:]
    assert words and Path(words[0]).name == "autotune", f"not an autotune command: {command!r}"
    argv = []
    for word in words[1:]:
        if word.startswith("[") and word.endswith("]") and len(word) > 2:
            word = word[1:-1]
        elif word.startswith("[-"):
            word = word[1:]
        elif word.endswith("]") and not word.startswith("["):
            word = word[:-1]
        argv.append(word)
    return argv


def parse_error(argv: list[str]) -> str | None:
    """None when ``autotune ARGV`` parses with the current CLI; else argparse's message.

    Mirrors ``autotune.cli.main``: the first word picks the verb (default: search), and the
    parser is the one that verb's module builds. Nothing runs.
    """
    verb = argv[0] if argv and argv[0] in cli.COMMANDS else "search"
    rest = argv[1:] if argv and argv[0] == verb else argv
    glue = getattr(cli, "_glue_negative_values", lambda a: a)  # `--budget -3ms`, as main() does
    parser, _ = cli.make_parser(verb)
    parser.allow_abbrev = False  # docs spell flags in full: `--max-d` would pass as `--max-drop`
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            parser.parse_args(glue(rest))
    except SystemExit as exc:
        if exc.code not in (0, None):  # 0: --help / --version, which parse fine
            return err.getvalue().strip() or f"exit code {exc.code}"
    return None


def _all_commands() -> list[DocCommand]:
    return [c for path in DOCS for c in extract_commands(path.read_text(), path)]


COMMANDS = _all_commands()


def test_docs_have_commands() -> None:
    """The extractor finds the README's main job (a broken extractor would check nothing)."""
    texts = {c.text.split("#")[0].strip() for c in COMMANDS if c.path == README}
    assert "autotune --budget 50% --device cpu --trials 30" in texts, sorted(texts)
    assert len(COMMANDS) >= 10, [c.where for c in COMMANDS]


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_parses(command: DocCommand) -> None:
    try:
        argv = argv_of(command.text)
    except ValueError as exc:  # shlex: unbalanced quotes
        pytest.fail(f"{command.where}: cannot split {command.text!r}: {exc}")
    error = parse_error(argv)
    assert error is None, f"{command.where}: {command.text!r} does not parse with the current CLI: {error}"


def test_a_bogus_flag_fails() -> None:
    """The check itself: a documented flag that does not exist is caught, with its line."""
    doc = "intro\n\n```bash\nautotune --budget 50% \\\n    --no-such-flag 3   # comment\n```\n"
    (command,) = extract_commands(doc)
    assert command.line == 4
    assert argv_of(command.text) == ["--budget", "50%", "--no-such-flag", "3"]
    error = parse_error(argv_of(command.text))
    assert error is not None and "--no-such-flag" in error
    assert parse_error(["export", "runs/x", "--trail", "3"]) is not None  # a subcommand's typo
    assert parse_error(["export", "runs/x", "--trial", "three"]) is not None  # a typed value
    assert parse_error(["--device", "cpu"]) is not None  # search's required --budget
    assert parse_error(["--budget", "50%", "--max-d", "1"]) is not None  # an abbreviation


def test_extraction_handles_shell_syntax() -> None:
    doc = "\n".join(
        [
            "`autotune --not-in-a-code-block` is prose",
            "```bash",
            "$ autotune export runs/<study> --trial 17 -o best.onnx   # ONNX + JSON",
            "nohup autotune --budget 50% > log.txt 2>&1 &",
            "~/venv/bin/autotune agent --port 8765 | tee agent.log",
            "autotune measure model.onnx [--json]",
            "python -m autotune devices",
            "pip install autotune-hw   # not a command of ours",
            "```",
            "```python",
            "result = autotune.search(model, x, evaluate=f, budget='50%')",
            "# autotune report runs/demo-digits-cpu-50pct",
            "```",
        ]
    )
    got = [argv_of(c.text) for c in extract_commands(doc)]
    assert got == [
        ["export", "runs/study", "--trial", "17", "-o", "best.onnx"],
        ["--budget", "50%"],
        ["agent", "--port", "8765"],
        ["measure", "model.onnx", "--json"],
        ["devices"],
    ]
    assert all(parse_error(argv) is None for argv in got)


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    """.ci/run marks the README's commands with `# README: ...`; the README shows them verbatim."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    marked = [ci[k + 1].strip() for k, line in enumerate(ci[:-1]) if line.strip().startswith("# README:")]
    assert marked, "no '# README:' markers in .ci/run"
    code = {line.split("  #")[0].strip() for _, line in _code_lines(README.read_text())}
    for command in marked:
        assert command in code, f"README lacks CI's command {command!r}"


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n < README_MAX_LINES, f"README.md has {n} lines (limit {README_MAX_LINES}); move detail to docs/"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces to -)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            seen[f"{slug}-{n}"] = 1
    return set(seen)


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_resolve(path: Path) -> None:
    """Links to other files of the repository point at files that exist, and at headings that do."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # http(s):, mailto:
        file, _, anchor = target.partition("#")
        dest = path.parent / file if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files or headings: {broken}"
