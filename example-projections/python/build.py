#!/usr/bin/env python3
"""Build every projection of this folder (each `*/app.py`) to `OUT/NAME.wasm`.

    python3 build.py OUT [NAME...] [--projects DIR]

NAME is the folder name (`invoice_billing` -> `invoice_billing.wasm`). A component whose sources (its folder, `sdk/`, the WIT contract) have not changed since it was
built is kept as it is. `--projects DIR` builds the projections of another folder (each
`DIR/*/app.py`) with this folder's SDK. Needs componentize-py (`scripts/setup` installs it).
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SDK = HERE / "sdk"
WIT = HERE.parent.parent / "wit"


def digest(*folders):
    hash = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                hash.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return hash.hexdigest()


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) > 1 else 2
    args = sys.argv[1:]
    source = HERE
    if "--projects" in args:
        at = args.index("--projects")
        if at + 1 >= len(args):
            print("build.py: --projects needs a folder", file=sys.stderr)
            return 2
        source = Path(args[at + 1]).resolve()
        del args[at:at + 2]
    out = Path(args[0]).resolve()
    wanted = set(args[1:])
    out.mkdir(parents=True, exist_ok=True)
    componentize = shutil.which("componentize-py")
    if componentize is None:
        print("build.py: componentize-py is not installed (scripts/setup installs it: pip install componentize-py==0.25.1)", file=sys.stderr)
        return 1
    projects = sorted(p.parent for p in source.glob("*/app.py"))
    if not projects:
        print(f"build.py: no */app.py in {source}", file=sys.stderr)
        return 1
    for project in projects:
        name = project.name
        if wanted and name not in wanted:
            continue
        target, stamp = out / f"{name}.wasm", out / f".{name}.sources"
        sources = digest(project, SDK, WIT)
        if target.exists() and stamp.exists() and stamp.read_text() == sources:
            continue
        partial = out / f".{name}.wasm.partial"
        command = [componentize, "-d", str(WIT), "-w", "projection", "componentize",
                   "-p", str(project), "-p", str(SDK), "app", "-o", str(partial)]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            print(f"build.py: {project.name}: componentize-py failed:\n{built.stdout}{built.stderr}", file=sys.stderr)
            return 1
        partial.replace(target)
        stamp.write_text(sources)
        print(f"built {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
