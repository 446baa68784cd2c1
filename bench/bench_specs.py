"""Run a folder of isolation-tester specs and count how many match their golden outputs.

    python bench/bench_specs.py SPECS_DIR EXPECTED_DIR [--schedule FILE] [--dsn DSN]
                                [--runs N] [--timeout S]

SPECS_DIR holds ``NAME.spec`` files, EXPECTED_DIR their golden outputs ``NAME.out``
(and accepted alternatives ``NAME_1.out`` ...), for instance ``src/test/isolation``'s
``specs`` and ``expected`` folders of a PostgreSQL source tree of the server's major
version. ``--schedule`` (an ``isolation_schedule`` file: ``test: NAME ...`` lines)
picks the specs and their order; otherwise every spec runs, by name.

Each run starts one temporary server (or uses ``--dsn``) and runs the specs one
after the other in one database, as ``python -m acid_lab spec`` does. It prints the
wall time of each run and their median, how many specs match byte for byte, and
every spec that does not match or is skipped, with the reason.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from acid_lab.commands.spec import run_specs
from acid_lab.engine.spec import SpecError, load_spec
from acid_lab.engine.spec_runner import DEFAULT_STEP_TIMEOUT


def spec_paths(specs_dir: Path, schedule: Path | None) -> list[Path]:
    if schedule is None:
        return sorted(specs_dir.glob("*.spec"))
    names = [name for line in schedule.read_text().splitlines()
             if line.startswith("test:") for name in line.split()[1:]]
    return [specs_dir / f"{name}.spec" for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs_dir", type=Path)
    parser.add_argument("expected_dir", type=Path)
    parser.add_argument("--schedule", type=Path)
    parser.add_argument("--dsn")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=DEFAULT_STEP_TIMEOUT)
    args = parser.parse_args(argv)

    try:
        specs = [load_spec(path) for path in spec_paths(args.specs_dir, args.schedule)]
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    times, verdicts = [], []
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        verdicts = run_specs(specs, args.dsn, expected=str(args.expected_dir),
                             timeout=args.timeout)
        times.append(time.perf_counter() - started)
        print(f"run {run}: {times[-1]:.1f} s wall", flush=True)

    compared = [v for v in verdicts if v.status != "skipped"]
    matching = [v for v in compared if v.status == "match"]
    print(f"\n{len(specs)} specs; wall time median {statistics.median(times):.1f} s "
          f"over {len(times)} run(s)")
    print(f"{len(matching)} of {len(compared)} specs match byte for byte "
          f"({100 * len(matching) / max(1, len(compared)):.1f} %); "
          f"{len(verdicts) - len(compared)} skipped")
    for verdict in verdicts:
        if verdict.status == "skipped":
            print(f"  skipped  {verdict.spec.name}: {verdict.reason}")
        elif verdict.status != "match":
            print(f"  {verdict.status:8} {verdict.spec.name}: {verdict.reason}")
    return 0 if len(matching) == len(compared) else 1


if __name__ == "__main__":
    sys.exit(main())
