"""What a run records about its machine (bench/machine.py): the CPU facts that tell two machines apart when
their model names do not, parsed from /proc/cpuinfo as x86 and Arm kernels write it."""

from __future__ import annotations

import torch

from bench import machine
from bench.tracking import layout, results

X86 = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 167
model name	: Intel(R) Xeon(R) Processor
stepping	: 1
flags		: fpu sse2 fma avx2 avx512f avx512_bf16 amx_tile

processor	: 1
vendor_id	: AuthenticAMD
model name	: something else
"""

ARM = """processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes sve sve2
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
"""


def test_x86_cpu_detail_names_family_model_stepping_and_math_extensions(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86)
    fields = machine.cpuinfo_fields(str(tmp_path / "cpuinfo"))
    assert fields["model name"] == "Intel(R) Xeon(R) Processor"  # the first processor's block only
    assert fields["vendor_id"] == "GenuineIntel"
    assert machine.describe_cpu(fields, "AVX512") == (
        "GenuineIntel family 6 model 167 stepping 1; torch kernels AVX512; fma avx2 avx512f avx512_bf16 amx_tile")


def test_arm_cpu_detail_names_implementer_and_part(tmp_path):
    (tmp_path / "cpuinfo").write_text(ARM)
    detail = machine.describe_cpu(machine.cpuinfo_fields(str(tmp_path / "cpuinfo")), "SVE256")
    assert detail == "implementer 0x41 part 0xd40 variant 0x1; torch kernels SVE256; asimd sve sve2"


def test_no_cpuinfo_falls_back_without_failing(tmp_path):
    assert machine.cpuinfo_fields(str(tmp_path / "absent")) == {}
    assert "; torch kernels DEFAULT; no listed extensions" in machine.describe_cpu({}, "DEFAULT")


def test_this_machine_is_recorded_with_its_detail():
    env = results.environment(torch.device("cpu"))
    assert env["cpu_detail"] == machine.cpu_detail() and "torch kernels" in env["cpu_detail"]
    assert layout.parent_tags("p", "f", env, "judge:mnist", "0" * 64)[layout.CPU_DETAIL] == env["cpu_detail"]
