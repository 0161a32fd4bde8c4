"""A dask.distributed cluster of 2 worker processes on 127.0.0.1, for the Dask tests.

Run as a script (a LocalCluster with processes must be made under ``__main__``): it prints the
scheduler's address on its first line and serves until it is killed.
"""

import sys
import time

from distributed import LocalCluster

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                           scheduler_port=0, dashboard_address=None, silence_logs=40)
    print(cluster.scheduler_address, flush=True)
    sys.stdout.close()
    while True:
        time.sleep(3600)
