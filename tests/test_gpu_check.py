"""benchmarks/gpu_check.sh, the prepared GPU check: its plumbing, on CPU (`--dry_run`)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO


def gpu_check(*args, python_from_path: bool = False) -> subprocess.CompletedProcess:
    """The script as the device runs it: PYTHON set, or (`python_from_path`) its default python3
    from PATH, as on the GPU machine."""
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    if python_from_path:
        del env["PYTHON"]
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    env.pop("OUT", None)
    return subprocess.run(["bash", "benchmarks/gpu_check.sh", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    proc = gpu_check("--dry_run", "--bogus")
    assert (proc.returncode, proc.stderr) == (
        2, "gpu_check.sh: error: unknown argument '--bogus' (see --help)\n")
    proc = gpu_check("--text", tmp_path / "missing.txt", "--out", out)
    assert (proc.returncode, proc.stderr) == (
        2, f"gpu_check.sh: error: --text: no such file: '{tmp_path / 'missing.txt'}' "
           "(benchmarks/gpu_wheels.sh puts Tiny Shakespeare in .whl/)\n")
    assert not out.exists()


def test_parts_past_the_time_budget_are_listed_as_skipped(tmp_path):
    """With 5 s and python3 from PATH (no PYTHON, as on the GPU machine): the machine is printed,
    every later part is not started but listed; nothing that ran failed, so the status is 0."""
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be\n" * 50)
    proc = gpu_check("--dry_run", "--text", text, "--out", tmp_path / "out", "--budget", 5,
                     python_from_path=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert proc.returncode == 0, log
    assert "=== machine: exit 0" in log and "devices: [CpuDevice(id=0)]" in log, log
    skipped = ["tests"] + [f"mfu batch 2 remat {r}" for r in ("none", "save_dots")] + ["baby GPT"]
    assert log.splitlines()[-len(skipped):] == [f"=== SKIPPED (time budget): {s}"
                                                for s in skipped]


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_its_sections(tmp_path):
    """The whole check on CPU with tiny sizes (about 50 s): every part passes, RESULTS.md in
    --out gets the MFU and baby GPT sections, the repo's benchmarks/RESULTS.md is untouched."""
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: to be or not to be, that is the question\n"
                            for i in range(3000)))
    proc = gpu_check("--dry_run", "--text", text, "--out", tmp_path / "out")
    log = (tmp_path / "out" / "log.txt").read_text()
    assert proc.returncode == 0, log[-3000:]
    for part in ["machine", "tests", "mfu batch 2 remat none", "mfu batch 2 remat save_dots",
                 "baby GPT"]:
        assert f"=== {part}: exit 0" in log, part
    sections = (tmp_path / "out" / "RESULTS.md").read_text()
    assert [line for line in sections.splitlines() if line.startswith("## ")] == [
        "## GPT-2 small MFU (cpu x 1, batch 2, remat none)",
        "## GPT-2 small MFU (cpu x 1, batch 2, remat save_dots)",
        "## Baby GPT, shakespeare-char (cpu x 1)"]
    assert "| cpu x 1 | 20 |" in sections
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == results
