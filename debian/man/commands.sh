#!/bin/sh
# commands.sh BINARY: a help2man include file with the --help of every command and subcommand
# of the admin CLI (help2man itself only reads the top-level --help). Used by debian/rules.
set -eu
binary=$1
# The command names of a --help output's "Commands:" block (clap), without "help".
commands() {
	awk '/^Commands:/ { inside = 1; next } /^[^ ]/ { inside = 0 } inside && /^  [a-z]/ { print $1 }' |
		grep -vx help || true
}
# Verbatim text for roff: backslashes escaped, no line starting with a control character.
verbatim() {
	sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'
}
section() { # section COMMAND...: one subsection with the --help of COMMAND
	printf '.SS "%s"\n.nf\n' "$*"
	# The global options are in OPTIONS above: not repeated in each command.
	"$binary" "$@" --help | grep -Ev '^ +--(config-file|config-dir|no-default-config-files) ' | verbatim
	printf '.fi\n'
}
printf '[COMMANDS IN DETAIL]\n'
for command in $("$binary" --help | commands); do
	section "$command"
	for subcommand in $("$binary" "$command" --help | commands); do
		section "$command" "$subcommand"
	done
done
