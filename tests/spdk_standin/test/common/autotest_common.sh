#!/usr/bin/env bash
# A stand-in for SPDK's test/common/autotest_common.sh: the parts whose output and files are read
# (what SPDK v24.01 to v26.01 print): run_test's "START TEST NAME" / "END TEST NAME" between rows
# of stars, the command timed by bash's `time`, test_domain's dotted names of nested steps, each
# finished step appended to $output_dir/test_completions.txt; errexit with an ERR trap that prints
# SPDK's backtrace block; xtrace on, with SPDK's PS4. Sourced by the scripts as SPDK's are.

# xtrace stays off until as many restores as disables: a function that silences its own lines
# can call another one that does
xtrace_depth=0
function xtrace_disable() {
	set +x
	((++xtrace_depth))
}

function xtrace_restore() {
	((xtrace_depth > 0)) && ((xtrace_depth--))
	((xtrace_depth == 0)) && set -x
	return 0
}

# The flags an autorun-spdk.conf sets, each given its default and exported, as SPDK declares them.
: ${SPDK_RUN_FUNCTIONAL_TEST=0}
export SPDK_RUN_FUNCTIONAL_TEST
: ${SPDK_TEST_UNITTEST=0}
export SPDK_TEST_UNITTEST
: ${SPDK_TEST_AUTOBUILD=""}
export SPDK_TEST_AUTOBUILD
: ${SPDK_RUN_ASAN=0}
export SPDK_RUN_ASAN
: ${SPDK_RUN_UBSAN=0}
export SPDK_RUN_UBSAN
: ${SPDK_TEST_STANDIN=0}
export SPDK_TEST_STANDIN

set -e
shopt -s nullglob extglob inherit_errexit

: "${output_dir:=$rootdir/../output}"
export output_dir
mkdir -p "$output_dir"

function run_test() {
	local test_name=$1 parent=${test_domain:-}
	shift
	xtrace_disable
	export test_domain=${parent:+$parent.}$test_name
	echo "************************************"
	echo "START TEST $test_name"
	echo "************************************"
	xtrace_restore
	time "$@"
	xtrace_disable
	echo "************************************"
	echo "END TEST $test_name"
	echo "************************************"
	export test_domain=$parent
	echo "${parent:-top_level} $test_name" >> "$output_dir/test_completions.txt"
	xtrace_restore
}

function print_backtrace() {
	[[ $- =~ e ]] || return 0
	local i src line
	xtrace_disable
	echo "========== Backtrace start: =========="
	echo ""
	for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
		src=${BASH_SOURCE[i]} line=${BASH_LINENO[i - 1]}
		echo "in $src:$line -> ${FUNCNAME[i]}([])"
		echo "     ..."
		[[ -f $src ]] && nl -w 4 -ba -nln "$src" | sed -n "$((line > 2 ? line - 2 : 1)),$((line + 2))p" \
			| sed "s/^/   /; s/^   $line /=> $line /"
		echo "     ..."
	done
	echo ""
	echo "========== Backtrace end =========="
	xtrace_restore
	return 0
}

set -o errtrace
shopt -s extdebug
trap "trap - ERR; print_backtrace >&2" ERR
PS4=' \t ${test_domain:-} -- ${BASH_SOURCE#${BASH_SOURCE%/*/*}/}@${LINENO} -- \$ '
set -x
