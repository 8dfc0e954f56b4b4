"""Every example runs as its docstring shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_check_recorded_outputs_reports_each_record() -> None:
    script = EXAMPLES / "check_recorded_outputs.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "record 1: valid",
        "record 2: invalid at step 'order_id': 'A-4321' is not quoted word for word "
        "from the conversation",
        "record 3: invalid at step 'decision': Input should be 'reply' or 'escalate'",
        "2 of 3 records invalid",
    ]
