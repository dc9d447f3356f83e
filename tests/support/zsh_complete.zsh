# What zsh offers for a command line, one candidate a line:
#     zsh -f zsh_complete.zsh SCRIPT 'pyinit --log-format '
# An interactive zsh in a pseudo-terminal (zpty) loads compinit and SCRIPT,
# wraps `compadd` to print each candidate as <<word>>, types the line and a
# TAB, then a marker line that ends the read. The technique of
# zsh-capture-completion, kept small.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='<%%P%%>' ; autoload -U compinit; compinit -u -d ${TMPDIR:-/tmp}/pyinit-test-zcompdump-$$; source $1"
zpty -w z 'compadd() { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi; typeset -a __hits; builtin compadd -A __hits "$@"; local h; for h in $__hits; do print -r -- "<<$h>>"; done; }'
zpty -w z "zstyle ':completion:*' list-prompt ''; zstyle ':completion:*' select-prompt ''; zstyle ':completion:*' menu no"
zpty -w z "print -r -- '<<'READY'>>'"
local out
# Type only once zle waits for input: the prompt `<%P%>` is drawn after READY
# (the typed commands' echo shows `<%%P%%>` and `'<<'READY'>>'`, never these).
zpty -r z out '*<<READY>>*<%P%>*'  # with a pattern, zpty reads until it matches
zpty -w -n z "$2"$'\t'
zpty -w z $'\C-u'"print -r -- '<<'DONE'>>'"
out=""
zpty -r z out '*<<DONE>>*'
zpty -d z
rm -f ${TMPDIR:-/tmp}/pyinit-test-zcompdump-$$
local word
for word in ${(f)out}; do
  [[ $word == *'<<'*'>>'* && $word != *DONE* ]] && print -r -- ${${word#*<<}%%>>*}
done
exit 0
