"""Print the documents of a folder as {"files": [{"path": ..., "size": ...}]}."""

import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
files = [{"path": str(p), "size": p.stat().st_size} for p in sorted(folder.glob("*.txt"))]
print(json.dumps({"files": files}))
