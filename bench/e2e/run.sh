#!/usr/bin/env bash
# End-to-end benchmark only (issue 6), now a phase of the suite: bench/run.sh with BENCH_PHASES=e2e
# (smtp-source → MTA → smtp-sink for Relay and Postfix, the smtp-sink ceiling, CPU and memory).
# usage: bench/e2e/run.sh [messages] [sessions]     results → bench/results/tmp/<date>-e2e.md
cd "$(dirname "$0")/../.." || exit 1
BENCH_PHASES=e2e BENCH_E2E_N=${1:-${BENCH_E2E_N:-10000}} BENCH_E2E_SESSIONS=${2:-${BENCH_E2E_SESSIONS:-20}} \
    BENCH_OUT=${BENCH_OUT:-bench/results/tmp/$(date +%F)-e2e.md} exec bench/run.sh
