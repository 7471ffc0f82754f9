"""The commands that read no state and call no vendor: `validate`, `schema`, `explain`, `docs`, `completion`.

They help write specs and use capctl (in an editor, a pre-commit hook, a shell), offline and without secrets.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import Annotated

import typer

from reconciler.cli.common import fail, keep_until_exit, load_specs, out_console, paths_or_default
from reconciler.cli.options import PathsArg

__all__ = ["completion", "docs", "explain", "schema", "validate"]


def validate(
    paths: PathsArg = None,
    resolve_secrets: Annotated[
        bool,
        typer.Option(
            "--resolve-secrets",
            help="Also read every secret reference (environment variables, files) and check its value, "
            "as plan and apply do. Without it, secret references are checked for their shape only.",
        ),
    ] = False,
) -> None:
    """Parse and check every spec offline; exit 0 with a summary, or 1 listing every error.

    Needs no secret: secret references ({env: NAME}, {file: PATH}) are checked for their shape, not read,
    so it runs in pre-commit hooks and on pull requests from forks. Other references are read: their
    values are checked (an integer appId, a duration in range). A reference may not name a task (a room,
    a job name, a file id); outside endpoints, appId, region and a few other fields its text is shown only
    as a fingerprint, in errors and plans alike.
    """
    spec_set = load_specs(paths_or_default(paths), resolve_secrets=resolve_secrets, validating=True)
    keep_until_exit()
    typer.echo(f"Valid: {spec_set.summary()}")
    for warning in spec_set.warnings():
        typer.echo(f"warning: {warning}", err=True)
    if spec_set.selector_jobs:  # as `plan` notes it and the daemon logs it: a valid set that captures nothing
        from reconciler.rooms import unheard_jobs, unheard_note

        for c in unheard_jobs(spec_set.selector_jobs, spec_set.providers):
            file, line, col = c.job.at(("spec", "provider"))
            note = unheard_note(f"{c.job.kind}/{c.job.name}", c.provider.name)
            typer.echo(f"warning: {file}:{line}:{col}: {note}", err=True)
    if not resolve_secrets:
        typer.echo("Secret references were checked for their shape only; --resolve-secrets reads them.")


def schema() -> None:
    """Print the JSON Schema of the spec language (for editors: yaml-language-server)."""
    from reconciler.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def complete_explain(incomplete: str) -> list[str]:
    from reconciler.spec import json_schema
    from reconciler.spec.explain import completions

    return completions(json_schema(), incomplete)


def explain(
    path: Annotated[
        str | None,
        typer.Argument(
            metavar="KIND[.FIELD]",
            help="A kind (SnapshotJob), or a field path below it: SnapshotJob.spec.interval. Default: the kinds.",
            autocompletion=complete_explain,
        ),
    ] = None,
) -> None:
    """Explain a spec kind or field: its type, default, range and description, from the JSON Schema (as kubectl
    explain). Lists and maps are walked through: SnapshotJob.spec.streams.user."""
    from reconciler.spec import json_schema
    from reconciler.spec.explain import ExplainError, kinds
    from reconciler.spec.explain import explain as explain_path

    schema = json_schema()
    if path is None:
        typer.echo("KINDS (capctl explain KIND for its fields):\n" + "".join(f"    {k}\n" for k in kinds(schema)))
        return
    try:
        typer.echo(explain_path(schema, path), nl=False)
    except ExplainError as exc:
        fail(str(exc))


def complete_docs(incomplete: str) -> list[str]:
    from reconciler import manual  # here: only `docs` reads the pages (importlib.resources and all)

    return manual.completions(incomplete)


def docs(
    topic: Annotated[
        str | None,
        typer.Argument(
            metavar="TOPIC",
            help="A page, as messages name it: spec-language, spec-language.md or docs/spec-language.md. "
            "Default: the list of pages.",
            autocompletion=complete_docs,
        ),
    ] = None,
    section: Annotated[
        str | None,
        typer.Argument(metavar="SECTION", help="Only this section of the page, by its heading: Limits."),
    ] = None,
) -> None:
    """Read capctl's documentation, the docs/*.md pages its messages point at, shipped with capctl.

    On a terminal the page is formatted and paged (PAGER, or less); piped or redirected, it is printed as
    Markdown. `capctl docs spec-language Limits` shows one section."""
    from reconciler import manual

    if topic is None:
        pages = manual.topics()
        width = max(map(len, pages))
        typer.echo(
            "TOPICS (capctl docs TOPIC [SECTION] to read one):\n"
            + "".join(f"    {name:<{width}}  {title}\n" for name, title in pages.items())
        )
        return
    try:
        found = manual.page(topic, section)
    except manual.ManualError as exc:
        fail(f"docs: {exc}")
    if not sys.stdout.isatty():
        typer.echo(found.text, nl=False)
        return
    from rich.markdown import Markdown

    console = out_console()
    with console.capture() as captured:
        console.print(Markdown(found.text))
    _page(captured.get())


def _page(text: str) -> None:
    """Through PAGER, else less (LESS=FRX unless set, as git: colours through, a short page needs no `q`),
    else more, else straight out. Not pydoc's pager (rich's default): where less is missing, as in the image,
    it first runs `more` on an empty file to see whether it works, a blank screen to dismiss before the page."""
    import shutil
    import subprocess

    command = os.environ.get("PAGER") or next((name for name in ("less", "more") if shutil.which(name)), None)
    if not command:
        typer.echo(text, nl=False)
        return
    # As git runs PAGER: through the shell, so `less -S` or a pipeline works.
    from reconciler.streams import terminal_bytes

    data = terminal_bytes(text, sys.stdout)  # what the terminal takes, as capctl's own output would be
    done = subprocess.run(command, shell=True, input=data, env={"LESS": "FRX", **os.environ}, check=False)
    if done.returncode == 127:  # the shell's "not found"
        fail(f"docs: the pager {command!r} (PAGER) was not found: set PAGER to one that is, or pipe to a file")


class CompletionShell(enum.StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


COMPLETE_VAR = "_CAPCTL_COMPLETE"  # the variable the scripts set when they ask capctl for completions


def completion(shell: Annotated[CompletionShell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")]) -> None:
    """Print the shell completion script for capctl's commands, options and task keys.

    bash: `source <(capctl completion bash)` (add it to ~/.bashrc); zsh: `source <(capctl completion zsh)`
    after compinit; fish: `capctl completion fish > ~/.config/fish/completions/capctl.fish`.
    """
    # Typer keeps its script templates in a private module; these are the scripts of its own
    # --show-completion, which capctl does not offer (a `completion` command is what kubectl and gh do).
    # bash's also passes the line as typed (reconciler/completion.py: a `:` in a --state URL).
    from typer._completion_shared import get_completion_script

    from reconciler.completion import BASH_SCRIPT

    if shell is CompletionShell.BASH:
        typer.echo(BASH_SCRIPT % {"complete_var": COMPLETE_VAR})
        return
    typer.echo(get_completion_script(prog_name="capctl", complete_var=COMPLETE_VAR, shell=shell.value))
