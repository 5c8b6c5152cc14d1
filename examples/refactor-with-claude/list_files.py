"""Print the Python files under a folder as {"files": [{"path": ..., "lines": ...}]}."""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
files = [
    {"path": str(p), "lines": len(p.read_text().splitlines())} for p in sorted(root.rglob("*.py"))
]
print(json.dumps({"files": files}))
