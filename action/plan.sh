#!/usr/bin/env bash
# The capctl action's work (action.yml), also run by the GitLab example: validate, plan, post the plan as one
# comment updated in place. Inputs come as variables, so any CI can call it:
#   CAPCTL_PATHS       spec paths, separated by spaces or newlines (default: specs); patterns (*, ?, [) expanded
#   CAPCTL_PLAN_ARGS   more `capctl plan` options, e.g. "-l team=media" (split at spaces and newlines; no
#                      shell quoting: a word in quotes is refused)
#   CAPCTL_COMMENT     "true" (default) posts/updates the comment; "false" only plans (anything else fails)
#   CAPCTL_COMMENT_ID  tells apart several plans in one pull request, named in each headline (default: default)
#   CAPCTL_OUT_DIR     where plan.json and plan.md go (default: .)
# Exit: 0 no changes, 2 changes, 1 anything failed (validation, plan, comment). It writes `exitcode` and
# `has-changes` to $GITHUB_OUTPUT and the comment's text to $GITHUB_STEP_SUMMARY when set (comment or not).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# -d '': every line, as a multi-line `with:` input gives them (read alone stops at the first newline)
read -r -d '' -a words <<< "${CAPCTL_PATHS:-specs}"
# A pattern (`specs/*.yaml`) is expanded as a shell would, as `capctl plan specs/*.yaml` in a terminal (it reached
# capctl as written: "no such file or directory"); one matching nothing stays as written, and capctl names it.
paths=()
for word in "${words[@]}"; do
  matched=()
  [[ "$word" == *[*?[]* ]] && mapfile -t matched < <(compgen -G "$word" | sort)
  if [ "${#matched[@]}" -gt 0 ]; then paths+=("${matched[@]}"); else paths+=("$word"); fi
done
read -r -d '' -a extra <<< "${CAPCTL_PLAN_ARGS:-}"
out="${CAPCTL_OUT_DIR:-.}"
comment="${CAPCTL_COMMENT:-true}"
mkdir -p "$out"
# No shell reads the words: `-l 'team=media'` would reach capctl as the label `'team` (a plan of nothing, "no
# changes", exit 0), so a word in quotes is refused.
quoted=""
for word in "${extra[@]}"; do
  case "$word" in \'*|*\'|\"*|*\") quoted="$word"; break ;; esac
done

if ! command -v capctl > /dev/null; then
  echo "capctl is not on PATH: install it first, as action.yml does (pip install -c constraints.txt CAPCTL_REPOSITORY)" >&2
  code=1
elif [ -n "$quoted" ]; then
  echo "plan-args is split at spaces and newlines, with no shell to remove quotes: $quoted would reach capctl" \
    "quotes and all (a selector or target matching nothing); write it without them" >&2
  code=1
elif [ "$comment" != "true" ] && [ "$comment" != "false" ]; then
  # Not taken for "false": `comment: yes` posted nothing and said nothing.
  echo "comment is \"$comment\": it takes true (post or update the plan comment) or false (only plan)" >&2
  code=1
elif ! capctl --no-color validate "${paths[@]}"; then
  echo "capctl validate found errors (listed above as file:line:col): no plan is made" >&2
  code=1
else
  code=0
  # --detailed-exitcode: 0 = no changes, 2 = changes, 1 = an error (a plan that could not observe a task too)
  capctl --no-color plan "${paths[@]}" "${extra[@]}" --detailed-exitcode --out "$out/plan.json" \
    --format markdown > "$out/plan.md" || code=$?
  if [ "$code" -ne 0 ] && [ "$code" -ne 2 ] && [ -s "$out/plan.md" ]; then
    # An incomplete plan (tasks it could not observe) printed its note, the why of "see the note above", to
    # plan.md, which is emptied below: the log keeps it.
    { echo "The incomplete plan capctl printed (its note says why):"; cat "$out/plan.md"; } >&2
  fi
fi
if [ "$code" -ne 0 ] && [ "$code" -ne 2 ]; then
  code=1
  : > "$out/plan.md"
fi

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "exitcode=$code"; echo "has-changes=$([ "$code" -eq 2 ] && echo true || echo false)"; } >> "$GITHUB_OUTPUT"
fi
# The step summary (GitHub) shows the comment's text on the run's page, comment or not: stdout went to plan.md,
# so with `comment: false` the plan was in no log.
post=(); [ "$comment" = "true" ] || post=(--no-post)
if [ "$comment" = "true" ] || [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  python3 "$here/plan_comment.py" --plan "$out/plan.md" --exit-code "$code" --id "${CAPCTL_COMMENT_ID:-default}" \
    ${GITHUB_STEP_SUMMARY:+--summary "$GITHUB_STEP_SUMMARY"} "${post[@]}" || exit 1
fi
exit "$code"
