"""Throughput of the code-gate executor against the plain baseline, on HumanEval-format tasks of our own.

The tasks are generated here: small functions with ``def check(candidate)`` tests, each with 5
completions (both joining forms, passing and failing ones, and a few infinite loops). The same
programs, joined by ``programs.program_for``, run twice in one process:

- ours: ``executor.run_programs`` with isolation on: rlimits, a scrubbed environment, a fresh temp
  dir, the audit hook, one warm executor forking every sample, a pool sized to the CPUs given;
- baseline: one ``python -c <program>`` subprocess per sample, one after the other, same timeout.

Printed: the machine (nproc, CPU model), the load average at start and end, samples/s of each and
the ratio (target >= 2x on 2 cores), and whether both saw the same outcome for every sample.

    python bench/eval_throughput.py                   # 100 tasks x 5 samples, timeout 3 s (HumanEval's)
    python bench/eval_throughput.py --tasks 20        # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from codex_trainer.data import Task  # noqa: E402
from codex_trainer.programs import program_for  # noqa: E402
from codex_trainer.executor import available_cpus, run_programs  # noqa: E402
from codex_trainer.sandbox import Limits  # noqa: E402

# name, parameters, docstring, canonical body, a wrong body, the reference, the test inputs; {p} is the task's number.
FAMILIES = [
    ("add_constant", "x: int", "x plus {p}.", "    result = x + {p}\n    return result\n",
     "    return x + {p} + 1\n", lambda p: lambda x: x + p, [0, 7, -3]),
    ("multiply_all", "numbers: list", "Every number times {p}.", "    return [n * {p} for n in numbers]\n",
     "    return [n + {p} for n in numbers]\n", lambda p: lambda xs: [n * p for n in xs], [[], [1, 2], [5, -1, 3]]),
    ("count_letter", "text: str", "How often chr(97 + {p} % 26) occurs in text.",
     "    letter = chr(97 + {p} % 26)\n    return text.count(letter)\n", "    return len(text) - {p}\n",
     lambda p: lambda s: s.count(chr(97 + p % 26)), ["", "abcabc", "the quick brown fox jumps over the lazy dog"]),
    ("sum_multiples", "n: int", "The sum of the multiples of {p} + 2 below n.",
     "    step = {p} + 2\n    return sum(i for i in range(n) if i % step == 0)\n",
     "    return sum(range(0, n + 1, {p} + 2))\n", lambda p: lambda n: sum(i for i in range(n) if i % (p + 2) == 0),
     [0, 10, 37]),
    ("clamp", "x: int", "x clamped to [-{p}, {p}].", "    low, high = -{p}, {p}\n    return max(low, min(high, x))\n",
     "    return min({p}, x)\n", lambda p: lambda x: max(-p, min(p, x)), [-100, 0, 100]),
    ("repeat_word", "word: str", "word repeated {p} + 1 times, joined by '-'.",
     "    copies = [word] * ({p} + 1)\n    return '-'.join(copies)\n", "    return word * ({p} + 1)\n",
     lambda p: lambda w: "-".join([w] * (p + 1)), ["a", "ok", "xyz"]),
    ("max_plus", "numbers: list", "The largest number plus {p}.",
     "    largest = max(numbers)\n    return largest + {p}\n", "    return numbers[0] + {p}\n",
     lambda p: lambda xs: max(xs) + p, [[1], [3, 9, 2], [-5, -2]]),
    ("shift_letters", "word: str", "Each lowercase letter shifted {p} places along the alphabet.",
     "    shifted = [chr((ord(c) - 97 + {p}) % 26 + 97) for c in word]\n    return ''.join(shifted)\n",
     "    return word[::-1]\n", lambda p: lambda w: "".join(chr((ord(c) - 97 + p) % 26 + 97) for c in w),
     ["", "abc", "xyz"]),
    ("digit_sum", "n: int", "The sum of the digits of n, plus {p}.",
     "    digits = str(abs(n))\n    return sum(int(d) for d in digits) + {p}\n", "    return n % 10 + {p}\n",
     lambda p: lambda n: sum(int(d) for d in str(abs(n))) + p, [0, 123, -4096]),
    ("is_multiple", "n: int", "Whether n is a multiple of {p} + 1.",
     "    divisor = {p} + 1\n    return n % divisor == 0\n", "    return n > {p}\n",
     lambda p: lambda n: n % (p + 1) == 0, [0, 12, 35]),
]
LOOPING = "    while True:\n        pass\n"
UNDEFINED = "    return undefined_name\n"


def make_task(number: int) -> tuple[Task, str, str]:
    """Task ``number``: the HumanEval-format record, its canonical body and a wrong body."""
    name, parameters, doc, body, wrong, reference, inputs = FAMILIES[number % len(FAMILIES)]
    p = number // len(FAMILIES) + 1
    entry_point = f"{name}_{number}"
    prompt = f'def {entry_point}({parameters}):\n    """{doc.format(p=p)}"""\n'
    function = reference(p)
    asserts = "".join(f"    assert candidate({value!r}) == {function(value)!r}\n" for value in inputs)
    test = f"\n\nMETADATA = {{'author': 'bench'}}\n\n\ndef check(candidate):\n{asserts}"
    return Task(f"bench/{number}", prompt, test, entry_point), body.format(p=p), wrong.format(p=p)


def make_programs(tasks: int) -> list[str]:
    """5 completions a task: standard form, trainer form (after the stripped prompt), wrong, undefined name,
    and standard again, or an infinite loop for every 25th task."""
    programs = []
    for number in range(tasks):
        task, body, wrong = make_task(number)
        last = LOOPING if number % 25 == 0 else body
        programs += [program_for(task, completion) for completion in (body, "\n" + body, wrong, UNDEFINED, last)]
    return programs


def baseline(programs: list[str], timeout: float) -> list[str]:
    statuses = []
    for program in programs:
        try:
            done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=timeout)
            statuses.append("passed" if done.returncode == 0 else "failed")
        except subprocess.TimeoutExpired:
            statuses.append("timeout")
    return statuses


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(function, *args):
    started = time.monotonic()
    value = function(*args)
    return value, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per sample, both sides")
    args = parser.parse_args()
    programs = make_programs(args.tasks)
    print(f"machine: nproc {os.cpu_count()}, CPUs given {available_cpus()}, {cpu_model()}, Python "
          f"{platform.python_version()}")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ours, ours_seconds = timed(lambda: run_programs(programs, Limits(timeout_seconds=args.timeout)))
    plain, plain_seconds = timed(baseline, programs, args.timeout)
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ours_statuses = [result.status for result in ours]
    print(f"{args.tasks} tasks x 5 samples = {len(programs)} programs, timeout {args.timeout:g} s; outcomes "
          f"{dict(sorted(Counter(ours_statuses).items()))}")
    print("| side | wall (s) | samples/s |\n|---|---:|---:|")
    for side, seconds in (("ours: executor, isolation on", ours_seconds), ("baseline: python -c, sequential",
                                                                          plain_seconds)):
        print(f"| {side} | {seconds:.2f} | {len(programs) / seconds:.1f} |")
    print(f"ratio: {plain_seconds / ours_seconds:.2f}x the baseline's samples/s (target >= 2x)")
    disagree = [i for i, (a, b) in enumerate(zip(ours_statuses, plain)) if a != b]
    print(f"same outcome for every sample: {not disagree}" + (f" (differ: {disagree[:10]})" if disagree else ""))


if __name__ == "__main__":
    main()
