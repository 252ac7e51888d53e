#!/usr/bin/env bash
# Ingest benchmark only (issue 4), now a phase of the suite: bench/run.sh with BENCH_PHASES=ingest.
# usage: bench/ingest/run.sh [messages-per-run]     results → bench/results/tmp/<date>-ingest.md
cd "$(dirname "$0")/../.." || exit 1
BENCH_PHASES=ingest BENCH_INGEST_N=${1:-${BENCH_INGEST_N:-3000}} \
    BENCH_OUT=${BENCH_OUT:-bench/results/tmp/$(date +%F)-ingest.md} exec bench/run.sh
