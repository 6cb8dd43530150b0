"""`python -m bench.rss CMD...`: run CMD, print its exit code, peak RSS and wall seconds as JSON.

Linux counts a child's peak RSS from the memory image it was forked from, so a large benchmark process would
inflate its children's numbers; started from this small launcher, the measured command is counted alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    start = time.perf_counter()
    process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "max_rss_kib": usage.ru_maxrss,
                      "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
