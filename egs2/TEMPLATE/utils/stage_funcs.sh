#!/usr/bin/env bash
# Helpers shared by the stage scripts (source it): logging, the check of --stage/--stop_stage,
# the .done markers that let a finished stage be skipped on a re-run, packing, and finding an
# experiment's best model.

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"; }

check_stages() {  # a stage that is not a number would make every stage test false: nothing runs
    [[ ${stage} =~ ^[0-9]+$ && ${stop_stage} =~ ^[0-9]+$ ]] \
        || { log "--stage and --stop_stage must be stage numbers, got '${stage}' and '${stop_stage}'" >&2; exit 1; }
}

# A marker holds the settings its stage ran with (may be empty): done_mark DIR [SETTINGS] is
# true only where the stage finished with the same settings.
done_mark() { [ -f "$1/.done" ] && [ "$(cat "$1/.done")" = "${2:-}" ]; }
mark_done() { mkdir -p "$1"; printf '%s' "${2:-}" > "$1/.done"; }

# pack_zip TASK OUT.zip OPTIONS...: espnet2.bin.pack, which writes its zip in place, into a hidden
# name beside OUT.zip (a glob of *.zip does not see it), renamed to OUT.zip when whole
pack_zip() {
    local task=$1 out=$2; shift 2
    local partial
    partial="$(dirname "${out}")/.partial.$(basename "${out}")"
    python -m espnet2.bin.pack "${task}" "$@" --outpath "${partial}"
    mv "${partial}" "${out}"
}

best_model() {  # exp dir -> its best model file, in the order of espnet_mamba.espnet.checkpoint.BEST_MODEL_FILES
    local d=$1
    for f in valid.acc.best.pth valid.loss.best.pth valid.cer_ctc.best.pth latest.pth; do
        [ -f "${d}/${f}" ] && { echo "${d}/${f}"; return; }
    done
    log "no model in ${d}" >&2; exit 1
}
