
# `cargo xtask …` runs the `xtask` alias of cargo, so the completion hooks
# cargo's own: words after `cargo xtask` are completed as `cargo-xtask …`
# (above); fish's own cargo completion keeps every other `cargo …`.
function __cargo_xtask_complete
    set -l words (commandline -opc)
    set -l line (string escape -- cargo-xtask $words[3..-1])
    complete -C "$line "(commandline -ct)
end
function __cargo_xtask_after_xtask
    set -l words (commandline -opc)
    test (count $words) -ge 2; and test "$words[2]" = xtask
end
complete -c cargo -n __cargo_xtask_after_xtask -f -a '(__cargo_xtask_complete)'
complete -c cargo -n 'test (count (commandline -opc)) -eq 1' -f -a xtask -d 'the fleet: cargo xtask --help'
# clap's fish script leaves out positional values.
complete -c cargo-xtask -n '__fish_cargo_xtask_using_subcommand completions' -f -a 'bash zsh fish'
