#!/usr/bin/env bash
# Runs the suite twice at once: on the embedded servers it starts itself (shown live),
# and on the machine's own PostgreSQL and NATS (shown when done). Both must pass.
# The external pass shows that the platform runs on servers it did not start: `up` with
# configured servers, and the adapters that talk to them (event store, views, delivery
# pipeline, GDPR; their tests marked slow run in the embedded pass only). Everything else
# runs in the embedded pass only, against real servers
# too, which keeps the suite within its time budget on two cores and the machine's
# PostgreSQL within its connection limit (one worker). The embedded pass runs four
# workers: its tests mostly wait on processes and servers, so four keep two cores busy.
# `--dist loadgroup` with tests/conftest.py's rules: tests sharing a module-scoped fixture
# run on one worker (set up once), and the slow ones start first.
# Tests marked own_servers (they kill servers or search their files) start servers of
# their own and run once.
set -u
cd "$(dirname "$0")/.."
# Every test starts Python processes (`picasse up` and its children, CLI calls): let them
# keep compiled modules, or each one compiles the project's sources again. (Some machines
# set PYTHONDONTWRITEBYTECODE; the compiled files go to __pycache__, which git ignores.)
unset PYTHONDONTWRITEBYTECODE
BIN=.venv/bin
mkdir -p test-output
# Each pass keeps its temporary files under a root of its own. Run as root, the embedded
# PostgreSQL runs as another user that must pass through those directories, and every
# pytest session that starts under the shared /tmp/pytest-of-<user> closes that directory
# to others again (pytest does so on start): a session starting beside us could then fail
# our server's initdb with "Permission denied".
temproot=$(mktemp -d /tmp/picasse-suite.XXXXXX)
mkdir "$temproot/embedded" "$temproot/external"
external_log=test-output/external-servers.log
(
  PICASSE_DATABASE_URL="${EXTERNAL_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}" \
  PICASSE_NATS_URL="${EXTERNAL_NATS_URL:-nats://127.0.0.1:4222}" \
  PYTEST_DEBUG_TEMPROOT="$temproot/external" \
    "$BIN/pytest" -q -n 1 -p no:cacheprovider --durations=15 -m "not own_servers and not slow" \
      tests/e2e/test_up.py::test_up_with_configured_servers_uses_them_and_starts_none \
      tests/integration/test_event_store.py tests/integration/test_views.py \
      tests/integration/test_view_plans.py \
      tests/integration/test_delivery_pipeline.py tests/integration/test_gdpr.py \
    >"$external_log" 2>&1
  echo $? >test-output/external-servers.rc
) &
external=$!
echo "== tests on the embedded servers (the run on the external servers goes on beside it) =="
env -u PICASSE_DATABASE_URL -u PICASSE_NATS_URL PYTEST_DEBUG_TEMPROOT="$temproot/embedded" "$BIN/pytest" -q -n 4 --dist loadgroup --no-loadscope-reorder -p no:cacheprovider --durations=25
embedded_rc=$?
wait "$external"
external_rc=$(cat test-output/external-servers.rc 2>/dev/null || echo 1)
echo
echo "== tests on the external servers (127.0.0.1:5432, 127.0.0.1:4222) =="
cat "$external_log"
if [ "$embedded_rc" -ne 0 ] || [ "$external_rc" -ne 0 ]; then
  echo "suite failed: embedded servers exit $embedded_rc, external servers exit $external_rc" >&2
  echo "(the tests' temporary files are kept in $temproot)" >&2
  exit 1
fi
rm -rf "$temproot"
