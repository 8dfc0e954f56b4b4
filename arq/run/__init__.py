"""The convergence loop of one run (private: `Executor` is its only caller)."""
