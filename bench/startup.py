"""How long `priorauth check` takes against `python -c "import pydantic"`, same machine, same run.

Runs each command N times, interleaved so load affects both alike, and prints the medians.
The "floor" rows import only what `check` cannot do without (pydantic's model machinery, the
referral models, click, PyYAML): the ratio no change to priorauth's own code can go below.
Usage: .venv/bin/python bench/startup.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "dm-steroid-intolerance.yaml"
ONE_MODEL = "from pydantic import BaseModel\nclass One(BaseModel):\n    a: int"
COMMANDS = {
    "python -c 'import pydantic'": [sys.executable, "-c", "import pydantic"],
    "floor: import pydantic.main": [sys.executable, "-c", "import pydantic.main"],
    # pydantic's first model pays once for the schema generator and the plugin lookup
    # (importlib.metadata): ~35 ms, against ~9 ms for all thirteen referral models together.
    "floor: + one one-field model": [sys.executable, "-c", ONE_MODEL],
    "floor: + the referral models": [sys.executable, "-c", "import priorauth.model.referral"],
    "floor: + click and PyYAML": [sys.executable, "-c", "import priorauth.model.referral, click, yaml"],
    "priorauth check (text)": [sys.executable, "-m", "priorauth", "check", str(SAMPLE)],
    "priorauth check --json": [sys.executable, "-m", "priorauth", "check", str(SAMPLE), "--json"],
}


def main(n: int = 15) -> None:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(n):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c 'import pydantic'"])
    print(f"| command | median of {n} (ms) | vs import pydantic |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med * 1000:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
