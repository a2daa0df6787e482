#!/usr/bin/env bash
# Helpers shared by the stage scripts (source it): logging, the .done markers that let a
# finished stage be skipped on a re-run, and finding an experiment's best model.

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"; }

done_mark() { [ -f "$1/.done" ]; }
mark_done() { mkdir -p "$1"; touch "$1/.done"; }

best_model() {  # exp dir -> its best model file
    local d=$1
    for f in valid.acc.best.pth valid.loss.best.pth latest.pth; do
        [ -f "${d}/${f}" ] && { echo "${d}/${f}"; return; }
    done
    log "no model in ${d}" >&2; exit 1
}
