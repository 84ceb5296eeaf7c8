#!/usr/bin/env bash
# Run the test suite and translate pytest's exit codes into a clear verdict.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
case $rc in
  0) echo "tests: passed" ;;
  1) echo "tests: FAILED (some tests failed)" >&2 ;;
  2) echo "tests: INTERRUPTED (pytest was interrupted)" >&2 ;;
  3) echo "tests: INTERNAL ERROR in pytest" >&2 ;;
  4) echo "tests: USAGE ERROR (bad pytest arguments)" >&2 ;;
  5) echo "tests: NO TESTS COLLECTED — treating as a failure" >&2 ;;
  *) echo "tests: pytest exited with $rc" >&2 ;;
esac
exit $rc
