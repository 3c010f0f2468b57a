#!/usr/bin/env bash
# A stand-in for SPDK's autotest.sh: as root, with the conf ($1) sourced before
# autotest_common.sh; cores collected into $output_dir/coredumps; setup.sh before the tests; the
# tests the conf's flags select, each a run_test step; timing.txt written at the end.
rootdir=$(readlink -f "$(dirname "$0")")
if [[ ! -f $1 ]]; then
	echo "ERROR: SPDK test configuration not specified"
	exit 1
fi
source "$1"
source "$rootdir/test/common/autotest_common.sh"
if ((EUID != 0)); then
	echo "$0 must be run as root"
	exit 1
fi

mkdir -p "$output_dir/coredumps"
start=$SECONDS
cd "$rootdir"
"$rootdir/scripts/setup.sh"

if ((SPDK_RUN_FUNCTIONAL_TEST == 1)); then
	if ((SPDK_TEST_STANDIN == 1)); then
		run_test "standin" "$rootdir/test/standin/steps.sh"
	fi
fi
echo "autotest $((SECONDS - start))" >> "$output_dir/timing.txt"
