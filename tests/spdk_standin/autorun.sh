#!/usr/bin/env bash
# A stand-in for SPDK's autorun.sh, what a CI job runs: the conf ($1, else ~/autorun-spdk.conf)
# is required and sourced, and printed; autobuild.sh builds the tree, then autotest.sh runs the
# tests (through `sudo -E`) when the conf asks for unit or functional tests.
set -e
rootdir=$(readlink -f "$(dirname "$0")")
conf=${1:-~/autorun-spdk.conf}
if [[ ! -f $conf ]]; then
	echo "ERROR: $conf doesn't exist"
	exit 1
fi
source "$conf"
echo "Test configuration:"
cat "$conf"

"$rootdir/autobuild.sh" "$conf"
if ((SPDK_TEST_UNITTEST == 1 || SPDK_RUN_FUNCTIONAL_TEST == 1)); then
	sudo -E "$rootdir/autotest.sh" "$conf"
fi
