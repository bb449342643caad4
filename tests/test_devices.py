"""The CPU devices a vgbench process asks for, and how a runner's workers share the cores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vgbench
from vgbench.executors import ProcessExecutor

ROOT = Path(__file__).resolve().parent.parent
SHOW = ("import json, os, vgbench, jax; "
        "print(json.dumps([len(jax.local_devices()), os.environ.get('XLA_FLAGS', '')]))")


def devices_in_a_fresh_process(inherit=False, **env_changes):
    own = ("VGBENCH_CPU_DEVICES", "XLA_FLAGS", "VGBENCH_XLA_DEVICES_FLAG")
    env = {k: v for k, v in os.environ.items() if inherit or k not in own}
    env.update(env_changes)
    proc = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_process_gets_one_cpu_device_per_usable_core_unless_told():
    count, flags = devices_in_a_fresh_process()
    assert count == vgbench.usable_cores() == len(os.sched_getaffinity(0))
    assert f"--xla_force_host_platform_device_count={count}" in flags
    assert devices_in_a_fresh_process(VGBENCH_CPU_DEVICES="3")[0] == 3
    # the user's own XLA flag wins over both
    count, flags = devices_in_a_fresh_process(VGBENCH_CPU_DEVICES="3",
                                              XLA_FLAGS="--xla_force_host_platform_device_count=1")
    assert count == 1 and flags.count("xla_force_host_platform_device_count") == 1


def test_a_child_of_a_vgbench_process_decides_its_own_device_count():
    # this process's XLA_FLAGS carry the count vgbench added (two, tests/conftest.py); a
    # worker started from here with its own share must not inherit that count
    assert "--xla_force_host_platform_device_count=2" in os.environ["XLA_FLAGS"]
    count, flags = devices_in_a_fresh_process(inherit=True, VGBENCH_CPU_DEVICES="1")
    assert count == 1 and flags.count("xla_force_host_platform_device_count") == 1
    assert devices_in_a_fresh_process(inherit=True, VGBENCH_CPU_DEVICES="3")[0] == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_device_count_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("VGBENCH_CPU_DEVICES", value)
    with pytest.raises(ValueError, match=f"VGBENCH_CPU_DEVICES={value!r}: expected a positive "
                                         "number of CPU devices"):
        vgbench.cpu_devices()


def test_process_workers_share_the_cores_and_a_user_count_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("VGBENCH_CPU_DEVICES")
    monkeypatch.setattr("vgbench.executors.usable_cores", lambda: 8)
    executor = ProcessExecutor(tmp_path, jobs=3)     # workers spawned from here on get 8 // 3
    assert os.environ["VGBENCH_CPU_DEVICES"] == "2"
    executor.close()
    assert "VGBENCH_CPU_DEVICES" not in os.environ
    monkeypatch.setenv("VGBENCH_CPU_DEVICES", "4")
    executor = ProcessExecutor(tmp_path, jobs=3)
    assert os.environ["VGBENCH_CPU_DEVICES"] == "4"
    executor.close()
    assert os.environ["VGBENCH_CPU_DEVICES"] == "4"
