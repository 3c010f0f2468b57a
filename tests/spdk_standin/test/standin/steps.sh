#!/usr/bin/env bash
# Shaped like SPDK's test scripts: finds its tree from where it is, sources autotest_common.sh,
# and runs its steps through run_test, one of them nested, one failing for real in the guest
# (a controller the topology does not have).
testdir=$(readlink -f "$(dirname "$0")")
rootdir=$(readlink -f "$testdir/../..")
source "$rootdir/test/common/autotest_common.sh"
script_args=("$@")

function controllers() {
	# what setup.sh bound, before the script ran (as autotest.sh runs it)
	local bound=(/sys/bus/pci/drivers/{uio_pci_generic,vfio-pci}/0000:*)
	((${#bound[@]} > 0))
	printf '%s\n' "${bound[@]##*/}"
}

function write_output() {
	echo "written by $0 ${script_args[*]} NET_TYPE=${NET_TYPE:-unset}" > "$output_dir/standin.txt"
}

function write_in_tree() {
	date > "$rootdir/test/standin/written-by-the-script"
	cat "$rootdir/test/standin/written-by-the-script"
}

function missing_controller() {
	cat /sys/class/nvme/nvme9/serial
}

function nested() {
	run_test "standin_present" controllers
	run_test "standin_missing" missing_controller
}

function app_on_cores() {
	# what an SPDK app does with its core mask (-m MASK): DPDK's EAL refuses to start when the
	# guest lacks a CPU the mask names
	local mask=$(($2)) cpu
	for ((cpu = 0; mask >> cpu; cpu++)); do
		if ((mask >> cpu & 1)) && [[ ! -e /sys/devices/system/cpu/cpu$cpu ]]; then
			echo "EAL: lcore $cpu is not present" >&2
			return 1
		fi
	done
}

run_test "standin_output" write_output
run_test "standin_tree" write_in_tree
run_test "standin_cores" app_on_cores -m 0x6
run_test "standin_nested" nested
