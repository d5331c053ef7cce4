"""Where a process's memory is, from /proc: RSS and PSS (smaps_rollup), threads, and RSS by what
is mapped (the executable, the Swift runtime and Foundation, other shared libraries, anonymous
memory: heap, stacks, malloc arenas). Summed over the pids given (nginx's master and workers)."""
import collections
import re
from pathlib import Path

GROUPS = ("executable", "Swift runtime + Foundation", "other libraries", "anonymous")


def _group(path: str, executable: str) -> str:
    if not path or path.startswith("["):
        return "anonymous"
    if path == executable:
        return "executable"
    name = Path(path).name
    if "/swift/" in path or name.startswith(("libswift", "libFoundation", "lib_Foundation", "libdispatch",
                                              "libBlocksRuntime")):
        return "Swift runtime + Foundation"
    return "other libraries"


def usage(pids) -> dict:
    """{"rss", "pss", "threads", "groups": {group: MB}} in MB for the live pids of `pids`."""
    total = {"rss": 0.0, "pss": 0.0, "threads": 0, "groups": collections.Counter()}
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        try:
            rollup = (proc / "smaps_rollup").read_text()
            smaps = (proc / "smaps").read_text()
            executable = str((proc / "exe").resolve())
            threads = len(list((proc / "task").iterdir()))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M))
        total["rss"] += int(fields.get("Rss", 0)) / 1024
        total["pss"] += int(fields.get("Pss", 0)) / 1024
        total["threads"] += threads
        mapping = ""
        for line in smaps.splitlines():
            head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if head:
                mapping = head.group(1)
            elif line.startswith("Rss:"):
                total["groups"][_group(mapping, executable)] += int(line.split()[1]) / 1024
    return total


def table(rows) -> str:
    """`rows`: [(name, idle usage, loaded usage)]; a table of RSS, PSS and threads, idle and
    loaded, then each row's loaded RSS by what is mapped."""
    lines = [f"{'memory (MB)':<14} {'idle RSS':>9} {'idle PSS':>9} {'load RSS':>9} {'load PSS':>9} {'threads':>8}"]
    for name, idle, loaded in rows:
        lines.append(f"{name:<14} {idle['rss']:>9.1f} {idle['pss']:>9.1f} {loaded['rss']:>9.1f} {loaded['pss']:>9.1f} "
                     f"{loaded['threads']:>8}")
    lines.append("")
    lines.append(f"{'RSS under load':<14} " + " ".join(f"{group:>14}" for group in GROUPS))
    for name, _, loaded in rows:
        lines.append(f"{name:<14} " + " ".join(f"{loaded['groups'].get(group, 0.0):>14.1f}" for group in GROUPS))
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    pids = [int(pid) for pid in sys.argv[1:]]
    print(table([("pids", usage(pids), usage(pids))]))
