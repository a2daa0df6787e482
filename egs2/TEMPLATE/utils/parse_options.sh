#!/usr/bin/env bash
# Source this after setting defaults: each "--name value" (or "--name=value") on the command
# line sets the shell variable "name", which must already exist (dashes in name become
# underscores). "--help" prints the variables a script accepts. Positional arguments stay.
_positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "Options of $(basename "$0") (defaults in the script header):"
            grep -E '^[a-z_0-9]+=' "$0" | sed 's/^/  --/'
            exit 0 ;;
        --*=*) _name=${1%%=*}; _value=${1#*=}; shift ;;
        --*) _name=$1; [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
             _value=$2; shift 2 ;;
        *) _positional+=("$1"); shift; continue ;;
    esac
    _name=${_name#--}; _name=${_name//-/_}
    if ! declare -p "${_name}" > /dev/null 2>&1; then
        echo "$0: unknown option --${_name}" >&2; exit 1
    fi
    printf -v "${_name}" '%s' "${_value}"
done
set -- "${_positional[@]+"${_positional[@]}"}"
unset _name _value _positional
