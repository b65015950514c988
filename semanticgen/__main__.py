import atexit
import os
import sys
import threading

from .cli import main

code = main(own_process=True)
# The work is done and its files are closed. A normal interpreter exit would now tear down the thousands of
# modules torch, diffusers and transformers brought in, over a second on 2 CPU cores: run the exit handlers
# (logging's flush among them), flush the streams and leave at once. With other non-daemon threads still
# running, exit normally, which waits for them (daemon ones, such as tqdm's monitor, it would not wait for).
if all(t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: as a normal exit, nothing more to write
        pass
    os._exit(code if isinstance(code, int) else 0)
sys.exit(code)
