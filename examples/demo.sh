#!/usr/bin/env bash
# `make demo`: run the word-count example end to end in a fresh git repository, interrupt it
# with Ctrl-C (SIGINT) part-way, resume it, and show that every document ran exactly once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export PRODIGY_HOME="${PRODIGY_HOME:-$(dirname "$here")/demo-home}"
work="$(mktemp -d "${TMPDIR:-/tmp}/prodigy-demo.XXXXXX")"
cp -r "$here/word-count/." "$work/"
cd "$work"
git init -q .

echo "== Working in $work (PRODIGY_HOME=$PRODIGY_HOME)"
echo "== 1. prodigy cook workflow.yaml, interrupted with Ctrl-C after 10 documents"
prodigy cook workflow.yaml >cook.log 2>&1 &
cook_pid=$!
job_id=""
for _ in $(seq 1 600); do
  job_id="$(grep -o 'mapreduce-[0-9]\{8\}-[0-9]\{6\}\(-[0-9]*\)\?' cook.log | head -n 1 || true)"
  [ -n "$job_id" ] && [ -f runs.log ] && [ "$(wc -l <runs.log)" -ge 10 ] && break
  sleep 0.1
done
kill -INT "$cook_pid"
status=0
wait "$cook_pid" || status=$?
cat cook.log
echo "   (exit code $status: 130 means interrupted, state saved)"

echo
echo "== 2. prodigy resume"
prodigy resume

echo
echo "== 3. Results"
echo "documents counted: $(wc -l <runs.log), distinct: $(sort -u runs.log | wc -l)"
if [ -n "$(sort runs.log | uniq -d)" ]; then
  echo "a document was counted twice:" >&2
  sort runs.log | uniq -d >&2
  exit 1
fi
echo "total words: $(cat out/total.txt)"
echo "job state: $PRODIGY_HOME/state/$(basename "$work")/mapreduce/jobs/$job_id/"
