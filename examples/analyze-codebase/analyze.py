"""A stand-in for a Claude analysis: count functions, classes and long lines of one file.

To show retries, a file whose name contains "flaky" fails on its first attempt.
"""

import ast
import json
import os
import sys
from pathlib import Path

path = Path(sys.argv[1])
if "flaky" in path.name and os.environ.get("PRODIGY_ATTEMPT") == "1":
    print(f"transient failure analysing {path}", file=sys.stderr)
    sys.exit(1)
source = path.read_text()
tree = ast.parse(source)
report = {
    "path": str(path),
    "functions": sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(tree)),
    "classes": sum(isinstance(n, ast.ClassDef) for n in ast.walk(tree)),
    "long_lines": sum(len(line) > 79 for line in source.splitlines()),
}
print(json.dumps(report))
