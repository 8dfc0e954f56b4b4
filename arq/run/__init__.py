"""One run: its frozen configuration (`config`), the convergence loop (`loop`), and the
reading of each call's stream (`stream`). `Executor` builds the configuration and the loops."""
