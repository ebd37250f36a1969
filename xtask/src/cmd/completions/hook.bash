
# `cargo xtask …` runs the `xtask` alias of cargo, so the completion hooks
# cargo's own: words after `cargo xtask` are completed by the function above,
# any other `cargo …` by the cargo completion registered before this script
# (rustup's, also when bash-completion loads it only on first use).
_cargo_xtask_prev=
_cargo_xtask_loaded=
_cargo_xtask_remember() {
    local spec
    spec=$(complete -p cargo 2>/dev/null) || return 0
    spec=${spec##* -F }
    spec=${spec%% *}
    if [[ -n $spec && $spec != _cargo_xtask_dispatch ]]; then
        _cargo_xtask_prev=$spec
    fi
}
_cargo_xtask_dispatch() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD >= 2 )) && [[ ${COMP_WORDS[1]} == xtask ]]; then
        local -a COMP_WORDS=(cargo_xtask "${COMP_WORDS[@]:2}")
        local COMP_CWORD=$((COMP_CWORD - 1))
        _cargo_xtask cargo_xtask "$cur" "${COMP_WORDS[COMP_CWORD - 1]}"
        return
    fi
    if [[ -z $_cargo_xtask_prev && -z $_cargo_xtask_loaded ]] && declare -F __load_completion >/dev/null; then
        # bash-completion loads cargo's completion on first use: let it, then hook again.
        _cargo_xtask_loaded=1
        complete -r cargo
        __load_completion cargo
        _cargo_xtask_remember
        complete -F _cargo_xtask_dispatch -o bashdefault -o default cargo
    fi
    COMPREPLY=()
    if [[ -n $_cargo_xtask_prev ]]; then
        "$_cargo_xtask_prev" "$@"
    fi
    if (( COMP_CWORD == 1 )) && [[ xtask == "$cur"* && " ${COMPREPLY[*]} " != *" xtask "* ]]; then
        COMPREPLY+=(xtask)
    fi
}
_cargo_xtask_remember
complete -F _cargo_xtask_dispatch -o bashdefault -o default cargo
