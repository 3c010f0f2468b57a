"""Host conditions recorded with every test (orchestrator.engine.host), read from a host tree
laid out as Linux lays out /proc and /sys."""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine import host
from orchestrator.results import lines


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def a_host(root: Path, idle: int, steal: int, throttles: int, load: str) -> None:
    write(root, "proc/stat", f"cpu  1000 0 500 {idle} 100 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    write(root, "proc/loadavg", f"{load} 0.50 0.40 3/200 1234\n")
    for cpu, count in (("cpu0", throttles), ("cpu1", 0)):
        write(root, f"sys/devices/system/cpu/{cpu}/thermal_throttle/core_throttle_count", f"{count}\n")
        write(root, f"sys/devices/system/cpu/{cpu}/thermal_throttle/package_throttle_count", "1\n")
        write(root, f"sys/devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq", "800000\n" if cpu == "cpu0" else "3400000\n")
    write(root, "sys/class/hwmon/hwmon0/name", "coretemp\n")
    write(root, "sys/class/hwmon/hwmon0/temp1_input", "81000\n")
    write(root, "sys/class/hwmon/hwmon0/temp1_label", "Package id 0\n")
    write(root, "proc/pressure/cpu", "some avg10=63.20 avg60=40.00 avg300=10.00 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=0\n")


def test_a_hot_busy_host_is_recorded_and_flagged(tmp_path: Path) -> None:
    a_host(tmp_path, idle=8000, steal=0, throttles=3, load="0.20")
    before = host.sample(tmp_path)
    a_host(tmp_path, idle=9000, steal=400, throttles=15, load="9.75")
    cond = host.conditions(before, host.sample(tmp_path))
    assert cond["throttle_events"] == 12
    assert cond["steal_pct"] == 28.6  # 400 of the 1400 jiffies between the samples
    assert cond["temperatures_c"] == {"coretemp/Package id 0": 81.0}
    assert cond["cpu_freq"] == {"min_mhz": 800.0, "max_mhz": 3400.0}
    assert cond["pressure_pct"] == {"cpu": 63.2}
    assert cond["load"][0] == 9.75
    cond["cpus"] = 2
    assert lines.flag(cond) == "CPU throttled 12 times, max 81 °C, load 9.8 on 2 CPUs, CPU pressure 63 %, steal 29 %"


def test_what_the_host_does_not_expose_is_said_so(tmp_path: Path) -> None:
    write(tmp_path, "proc/loadavg", "0.10 0.20 0.30 1/100 99\n")
    cond = host.conditions(host.sample(tmp_path), host.sample(tmp_path))
    assert cond["load"] == [0.1, 0.2, 0.3]
    for key in ("steal_pct", "throttle_events", "cpu_freq", "temperatures_c", "pressure_pct"):
        assert cond[key] == host.NA, key
    assert lines.flag(cond) is None


def test_thermal_zones_stand_in_for_hwmon(tmp_path: Path) -> None:
    write(tmp_path, "sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "67000\n")
    cond = host.conditions(host.sample(tmp_path), host.sample(tmp_path))
    assert cond["temperatures_c"] == {"x86_pkg_temp/thermal_zone0": 67.0}
