"""bash completion that survives a `:` in a word.

bash splits the words it hands a completion function at each character of COMP_WORDBREAKS, `:` and `=`
among them, so `capctl state show --state sqlite:///x.db <Tab>` reached capctl as `--state sqlite : ///x.db`
and no state was found. capctl's bash script also passes the line up to the cursor (COMP_LINE, COMP_POINT),
and the words are split from it as the shell quotes them. Without them (a script printed by an older capctl)
COMP_WORDS is read as before. zsh and fish hand over the line as typed: typer's scripts serve them.
"""

from __future__ import annotations

import os

# typer's own copy of click keeps the registry its completion reads (private, as the classes it registers).
from typer._click.shell_completion import add_completion_class, split_arg_string
from typer._completion_classes import BashComplete

__all__ = ["BASH_SCRIPT", "LineBashComplete", "register"]

# typer's bash script, plus COMP_LINE and COMP_POINT (bash does not export them to the command it runs).
BASH_SCRIPT = """
_capctl_completion() {
    local IFS=$'\\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   COMP_LINE="$COMP_LINE" \\
                   COMP_POINT=$COMP_POINT \\
                   %(complete_var)s=complete_bash $1 ) )
    return 0
}

complete -o default -F _capctl_completion capctl
"""

WORD_BREAKS = ":="  # the characters of bash's default COMP_WORDBREAKS that a capctl word may hold


class LineBashComplete(BashComplete):
    """typer's bash completion, reading the words from the line as typed."""

    def get_completion_args(self) -> tuple[list[str], str]:
        line, point = os.environ.get("COMP_LINE"), os.environ.get("COMP_POINT", "")
        if line is None or not point.isdigit():
            return super().get_completion_args()
        typed = line[: int(point)]
        words = split_arg_string(typed)
        if not typed or typed[-1].isspace():
            words.append("")  # the cursor starts a new word
        return words[1:-1], words[-1]

    def complete(self) -> str:
        args, incomplete = self.get_completion_args()
        # bash replaces only the part of the word after its last word break: answer with that part.
        cut = max(incomplete.rfind(c) for c in WORD_BREAKS) + 1
        values = (item.value for item in self.get_completions(args, incomplete))
        return "\n".join(v[cut:] if v.startswith(incomplete[:cut]) else v for v in values)


def register() -> None:
    """Serve bash with LineBashComplete (after typer's `completion_init`, which registers its own)."""
    add_completion_class(LineBashComplete, "bash")
