"""Total the per-file reports written by the map phase."""

import json
import sys
from pathlib import Path

reports = [
    json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json")) if p.stat().st_size
]
print(f"files: {len(reports)}")
print(f"functions: {sum(r['functions'] for r in reports)}")
print(f"classes: {sum(r['classes'] for r in reports)}")
print(f"long lines: {sum(r['long_lines'] for r in reports)}")
