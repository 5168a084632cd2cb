#!/usr/bin/env python3
"""Reports from cargo test's human output (stdin); `cargo test` stays the command, this only
reads what it prints.

  report.py junit <name> < cargo-test.log > report.xml   JUnit XML for CI dashboards: one
      <testsuite> per test binary, one <testcase> per `test NAME ... ok|FAILED|ignored` line; a
      failure carries the `---- NAME stdout ----` section.
  report.py times < cargo-test.log                        wall time of each test binary, slowest
      first, and the total.
"""
import re
import sys
from xml.sax.saxutils import escape, quoteattr

RUNNING = re.compile(r"^\s+Running (?:unittests )?(\S+) \((?:.*/)?([^/]+?)(?:-[0-9a-f]{16})?\)")
RESULT = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
FINISHED = re.compile(r"^test result: .* finished in ([0-9.]+)s")
STDOUT = re.compile(r"^---- (\S+) stdout ----$")


def parse(lines):
    suites, suite, capture = [], None, None
    for line in lines:
        line = line.rstrip("\n")
        m = RUNNING.match(line)
        if m:
            suite = {"name": f"{m.group(2)} {m.group(1)}", "cases": {}, "order": [], "time": "0"}
            suites.append(suite)
            capture = None
            continue
        if suite is None:
            continue
        m = RESULT.match(line)
        if m:
            suite["cases"][m.group(1)] = {"status": m.group(2), "output": []}
            suite["order"].append(m.group(1))
            continue
        m = STDOUT.match(line)
        if m and m.group(1) in suite["cases"]:
            capture = suite["cases"][m.group(1)]["output"]
            continue
        m = FINISHED.match(line)
        if m:
            suite["time"] = m.group(1)
            suite["result"] = line
            capture = None
            continue
        if line == "failures:" or line.startswith("test result:"):
            capture = None
        elif capture is not None:
            capture.append(line)
    return suites


def times(suites):
    print("== time per test binary (s)")
    for s in sorted(suites, key=lambda s: -float(s["time"])):
        c = s["cases"].values()
        ok = sum(x["status"] == "ok" for x in c)
        failed = sum(x["status"] == "FAILED" for x in c)
        print(f"{float(s['time']):8.1f}  {s['name']}  ({ok} passed, {failed} failed)")
    print(f"{sum(float(s['time']) for s in suites):8.1f}  total of {len(suites)} test binaries")


def junit(name, suites):
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f"<testsuites name={quoteattr(name)}>"]
    for s in suites:
        cases = s["cases"]
        failures = sum(c["status"] == "FAILED" for c in cases.values())
        skipped = sum(c["status"] == "ignored" for c in cases.values())
        out.append(
            f"  <testsuite name={quoteattr(s['name'])} tests=\"{len(cases)}\" failures=\"{failures}\" "
            f"skipped=\"{skipped}\" time=\"{s['time']}\">"
        )
        for n in s["order"]:
            c = cases[n]
            out.append(f"    <testcase classname={quoteattr(s['name'])} name={quoteattr(n)}>")
            if c["status"] == "FAILED":
                text = "\n".join(c["output"])
                out.append(f"      <failure message=\"test failed\">{escape(text)}</failure>")
            elif c["status"] == "ignored":
                out.append("      <skipped/>")
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    print("\n".join(out))


if __name__ == "__main__":
    suites = parse(sys.stdin)
    if sys.argv[1:2] == ["junit"]:
        junit(sys.argv[2] if len(sys.argv) > 2 else "cargo-test", suites)
    elif sys.argv[1:2] == ["times"]:
        times(suites)
    else:
        sys.exit("usage: report.py junit <name> | report.py times  (cargo test output on stdin)")
