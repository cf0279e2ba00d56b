#!/usr/bin/env python3
"""Instructions per admission from callgrind's per-thread dumps (scripts/admission-instructions.sh).

  cgsum.py COUNT callgrind.out.PID.1-*

Prints the total, and the same without what callgrind counts but the CPU does not do alike:
`rep`-prefixed fills and copies counted per byte (glibc's memset/memcpy) and SHA-256 in software
(valgrind hides the CPU's SHA instructions). Threads are grouped: HTTP workers, the rest.
"""
import re
import subprocess
import sys

# SHA-256's compression is `sha2::sha256::soft::*` in a build of many codegen units and inlined
# into `sha2::sha256::compress256` in one built with LTO (the release profile since 2026-12-07).
ARTIFACTS = (
    "__memset_avx2_unaligned_erms",
    "__memcpy_avx_unaligned_erms",
    "sha2::sha256::soft",
    "sha2::sha256::compress256",
)
MARKS = [("http", "h1::dispatcher"), ("actor", "EventActor"), ("writer", "WriteBehind"), ("outbox", "OutboxWorker")]

count = int(sys.argv[1])
total = artifacts = 0
groups = {}
for path in sys.argv[2:]:
    text = open(path).read()
    found = re.search(r"^totals: (\d+)", text, re.M)
    instructions = int(found.group(1)) if found else 0
    labels = [name for name, mark in MARKS if mark in text]
    annotated = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    counted = sum(
        int(line.split()[0].replace(",", ""))
        for line in annotated.splitlines()
        if re.match(r"^\s*[\d,]+ ", line) and any(artifact in line for artifact in ARTIFACTS)
    )
    total += instructions
    artifacts += counted
    group = "HTTP workers" if "http" in labels else "other threads (" + "+".join(labels) + ")"
    sums = groups.setdefault(group, [0, 0])
    sums[0] += instructions
    sums[1] += counted
print("per admission: %.0f instructions; %.0f without memset/memcpy/software SHA" % (total / count, (total - artifacts) / count))
for group, (instructions, counted) in sorted(groups.items(), key=lambda item: -item[1][0]):
    if instructions / count >= 50:
        print("  %-40s %8.0f  without %8.0f" % (group, instructions / count, (instructions - counted) / count))
