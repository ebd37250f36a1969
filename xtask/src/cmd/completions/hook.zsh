
# `cargo xtask …` runs the `xtask` alias of cargo, so the completion hooks
# cargo's own: words after `cargo xtask` are completed by _cargo-xtask above,
# any other `cargo …` by the cargo completion there was (rustup's _cargo).
# Source this file after `compinit`.
if [[ ${_comps[cargo]:-} != _cargo_xtask_dispatch ]]; then
    typeset -g _cargo_xtask_prev=${_comps[cargo]:-}
fi
_cargo_xtask_dispatch() {
    if (( CURRENT > 2 )) && [[ ${words[2]} == xtask ]]; then
        words=(cargo-xtask "${(@)words[3,-1]}")
        (( CURRENT-- ))
        _cargo-xtask "$@"
    elif [[ -n $_cargo_xtask_prev ]]; then
        (( CURRENT == 2 )) && compadd -- xtask
        "$_cargo_xtask_prev" "$@"
    else
        _arguments '1: :(xtask)' '*: :_files'
    fi
}
compdef _cargo_xtask_dispatch cargo
