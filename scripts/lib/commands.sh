# shellcheck shell=bash
# How the operator scripts show and run their commands (sourced, never run on its own).
# The caller sets DRY_RUN (true/false) and LOG_NAME (the prefix of its messages), and opens
# file descriptor 3 for the dry run's listing (`exec 3>&1`), so that a listing made from
# inside $(...) still reaches the terminal.

PLACEHOLDERS='^[][A-Za-z0-9_./:=@,+%$-]+$'  # plain words with $VAR in them
quote() {  # one word as a shell needs it: bare when plain, "..." around a $PLACEHOLDER
  if [[ $1 == *'$'* && $1 =~ $PLACEHOLDERS ]]; then printf '"%s"' "$1"
  elif [[ $1 =~ ^[][A-Za-z0-9_./:=@,+%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
show() {
  local line="" word
  for word in "$@"; do line+="${line:+ }$(quote "$word")"; done
  printf '%s\n' "$line"
}
step() { if $DRY_RUN; then printf '\n# %s\n' "$*" >&3; else printf '\n== %s\n' "$*" >&2; fi; }
run() {  # print the command (dry run), or log and run it
  if $DRY_RUN; then show "$@" >&3; return 0; fi
  printf '+ %s\n' "$(show "$@")" >&2
  "$@"
}
capture() {  # VAR COMMAND...: the command's output into VAR (shown as VAR=$(...))
  local var=$1
  shift
  if $DRY_RUN; then
    # shellcheck disable=SC2016  # the listing shows VAR=$(...) as written
    printf '%s=$(%s)\n' "$var" "$(show "$@")" >&3
    printf -v "$var" '$%s' "$var"
    return 0
  fi
  local output
  output=$(run "$@")
  printf -v "$var" '%s' "$output"
}
retrying() {  # IAM may not know a new service account for a few seconds: try 6 times
  local attempt
  for attempt in 1 2 3 4 5 6; do
    run "$@" && return 0
    $DRY_RUN && return 0
    echo "$LOG_NAME: attempt $attempt failed; again in 10 s" >&2
    sleep 10
  done
  return 1
}
