#!/usr/bin/env bash
# A stand-in for SPDK's autobuild.sh: the tree built again where it runs (SPDK's configures and
# makes for the machine it is on), each part a run_test step; the sanitizer flags named as steps.
rootdir=$(readlink -f "$(dirname "$0")")
source "$1"
source "$rootdir/test/common/autotest_common.sh"
cd "$rootdir"
date -u

if ((SPDK_RUN_ASAN == 1)); then
	run_test "asan" echo "using asan"
fi
if ((SPDK_RUN_UBSAN == 1)); then
	run_test "ubsan" echo "using ubsan"
fi
run_test "make" make -B -j"$(nproc)"
