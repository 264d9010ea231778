#!/usr/bin/env bash
# scripts/format-check.sh: every C line changed since the style was adopted (.clang-format, h2o's
# style) is formatted as clang-format would: run by .ci/run. Lines nobody touched keep their
# shape, so that adopting the style did not rewrite every file (and every branch in flight).
#   scripts/format-check.sh          check; print the changes clang-format wants; exit 1 if any
#   scripts/format-check.sh --fix    apply them to the working tree
# The base is .ci/format-base (a commit); lines changed since then, committed or not, count.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format-diff >/dev/null || { echo "format-check: clang-format-diff missing (apt-get install clang-format)" >&2; exit 2; }
base=$(cat .ci/format-base)
if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
    # a shallow clone: what it has of the history, at least the last commit's changes
    base=$(git rev-list --max-parents=0 HEAD | head -1)
    if [ "$base" = "$(git rev-parse HEAD)" ]; then
        echo "format-check: a clone of one commit has no changed lines to check: nothing checked" >&2
        exit 0
    fi
    echo "format-check: $(cat .ci/format-base) is not in this clone: checking the lines changed since $base" >&2
fi
diff=$(git diff -U0 --no-color "$base" -- 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')
if [ "${1:-}" = --fix ]; then
    printf '%s\n' "$diff" | clang-format-diff -p1 -i
    exit 0
fi
out=$(printf '%s\n' "$diff" | clang-format-diff -p1)
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "format-check: the lines above are not formatted as .clang-format says: run scripts/format-check.sh --fix" >&2
    exit 1
fi
echo "format-check: every changed line is formatted"
