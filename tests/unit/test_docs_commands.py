"""Every `kfops ...` command the README and docs/ show names a command and options that exist.

A renamed option or command otherwise leaves the docs telling users to type something the CLI
refuses; this walks click's own command tree, so it checks what `kfops` would parse.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.conftest import REPO_ROOT

SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
COMMAND = re.compile(r"(?:^|&&\s*|;\s*|\$\(\s*|^\$\s+)(?:\S+/)?kfops\s+(?P<rest>.*)")


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shown_commands(text: str) -> list[str]:
    """The argument text after `kfops` of every command in a shell block or an inline code span."""
    found, fence, block = [], None, []
    for line in text.splitlines():
        marker = re.match(r"^\s*```(\w*)", line)
        if marker and fence is None:
            fence, block = marker.group(1), []
        elif marker:
            if fence in SHELL_FENCES:
                joined = re.sub(r"\s*\\\n\s*", " ", "\n".join(block))
                found += [m.group("rest") for raw in joined.splitlines()
                          if not raw.strip().startswith("#") and (m := COMMAND.search(raw.strip()))]
            fence = None
        elif fence is not None:
            block.append(line)
        else:
            found += re.findall(r"(?<!`)`kfops ([^`]+)`(?!`)", line)
    return found


def problems(rest: str, root) -> str | None:
    """Why ``kfops REST`` would not parse as shown (unknown command or option), or None."""
    rest = re.split(r"\s+#|\s*(?:\||&&|;|>|2>|\))", rest)[0]
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    command, path = root, ["kfops"]
    while tokens and hasattr(command, "commands") and tokens[0] in command.commands:
        command = command.commands[tokens[0]]
        path.append(tokens.pop(0))
    if hasattr(command, "commands") and tokens and re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
        return f"{' '.join(path)} has no command {tokens[0]!r}"
    options = {"--help"}
    for param in command.params:
        options.update(getattr(param, "opts", ()), getattr(param, "secondary_opts", ()))
    for token in tokens:
        flag = token.split("=")[0]
        if flag.startswith("-") and len(flag) > 1 and not re.match(r"^-\d", flag) and flag not in options:
            return f"{' '.join(path)} has no option {flag}"
    return None


def test_every_command_in_the_docs_parses():
    import typer

    from kfops.cli import _register_subcommands, app
    from kfops.cli.options import accept_verbose

    _register_subcommands()
    accept_verbose(app)
    root = typer.main.get_command(app)
    checked, wrong = 0, []
    for path in documents():
        for rest in shown_commands(path.read_text()):
            checked += 1
            if (problem := problems(rest, root)) is not None and "<" not in rest:
                wrong.append(f"{path.relative_to(REPO_ROOT)}: `kfops {rest.strip()}`: {problem}")
    assert checked > 150, checked  # the docs show about 190: a parser that finds none checks nothing
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_a_wrong_option_and_command():
    import typer

    from kfops.cli import _register_subcommands, app

    _register_subcommands()
    root = typer.main.get_command(app)
    assert problems("serve start --version 3 --port 8081", root) is None
    assert problems("serve start --versoin 3", root) == "kfops serve start has no option --versoin"
    assert problems("serve begin", root) == "kfops serve has no command 'begin'"
    text = "```bash\nkfops run training \\\n  --set x=1 --bogus\n```\nand `kfops drift check --since 2013-05`"
    assert shown_commands(text) == ["run training --set x=1 --bogus", "drift check --since 2013-05"]


def test_the_readmes_sample_summary_prints_the_floor_line_as_the_gate_words_it():
    """The README's `make run` summary is what a new user compares their own run with; its floor
    line once kept a wording the gate had dropped. Re-derive it from the gate for the same numbers."""
    from kfops.config import GateConfig
    from kfops.core.evaluation import gate

    readme = (REPO_ROOT / "README.md").read_text()
    floor = re.search(r"^\s+(PASS|FAIL) floor:roc_auc: .*$", readme, re.MULTILINE)
    metrics = re.search(r"test metrics\s+roc_auc (\d\.\d+)", readme)
    limit = re.search(r"`evaluate\.gate\.min_roc_auc`, (\d\.\d+)", readme)
    assert floor and metrics and limit, "the README's sample summary or its gate floor is gone"
    verdict = gate({"roc_auc": float(metrics.group(1))}, GateConfig(min_roc_auc=float(limit.group(1))))
    assert floor.group(0).strip() in verdict.reasons, (floor.group(0).strip(), verdict.reasons)
