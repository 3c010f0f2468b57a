#!/usr/bin/env bash
# A stand-in for SPDK's scripts/setup.sh, its default action (`config`): HUGEMEM MiB (default
# 2048) of 2 MiB hugepages reserved, and every NVMe function bound to uio_pci_generic, or to
# vfio-pci where the guest has an IOMMU, each printed as setup.sh prints it
# ("BDF (VENDOR DEVICE): OLD -> NEW"); fewer hugepages than asked for is an error, as there.
set -e
shopt -s nullglob

pages=$((${HUGEMEM:-2048} / 2))
echo "$pages" > /proc/sys/vm/nr_hugepages
got=$(< /proc/sys/vm/nr_hugepages)
if ((got < pages)); then
	echo "ERROR: requested $pages hugepages but $got could be allocated." >&2
	exit 1
fi

driver=uio_pci_generic
groups=(/sys/kernel/iommu_groups/*)
((${#groups[@]} > 0)) && driver=vfio-pci
modprobe "$driver"

for dev in /sys/bus/pci/devices/*; do
	[[ $(< "$dev/class") == 0x010802 ]] || continue
	bdf=${dev##*/} old="no driver"
	[[ -e $dev/driver ]] && old=$(basename "$(readlink -f "$dev/driver")")
	[[ $old == "$driver" ]] && continue
	[[ -e $dev/driver ]] && echo "$bdf" > "$dev/driver/unbind"
	echo "$driver" > "$dev/driver_override"
	echo "$bdf" > /sys/bus/pci/drivers_probe
	echo "$bdf ($(sed 's/^0x//' "$dev/vendor") $(sed 's/^0x//' "$dev/device")): $old -> $driver"
done
