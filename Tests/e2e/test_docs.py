"""The docs name only flags the binary has: each `--flag` after `bindu-mesh` in the docs (a code
span, a line of a code block, or the flag table of docs/configuration.md) is one of the command's
or of the subcommand named before it, as `bindu-mesh --experimental-dump-help` gives them.
Config keys, paths and links are checked by Tests/BinduMeshTests/DocsTests.swift."""
import json
import re
import subprocess

from harness import BIN_DIR, ROOT

DOCUMENTS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands() -> dict:
    """Each command's path ("bindu-mesh", "bindu-mesh certs dev", ...) to its long flags."""
    dump = json.loads(subprocess.run([str(BIN_DIR / "bindu-mesh"), "--experimental-dump-help"], check=True,
                                     capture_output=True, text=True).stdout)
    found = {}

    def walk(command, prefix):
        path = f"{prefix} {command['commandName']}".strip()
        found[path] = {name["name"] for argument in command.get("arguments", []) for name in argument.get("names", [])
                       if name["kind"] == "long"}
        for sub in command.get("subcommands", []):
            walk(sub, path)
    walk(dump["command"], "")
    return found


def invocations(text: str):
    """The words after each `bindu-mesh` in code spans and code blocks."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for line in [*spans, *(line for block in blocks for line in block.splitlines())]:
        for match in re.finditer(r"(?:^|[\s/])bindu-mesh((?:\s+[^\s#|;&]+)*)", line):
            yield match.group(1).split()


def test_every_flag_the_docs_name_is_one_the_binary_has():
    known = commands()
    unknown, seen = [], 0
    for document in DOCUMENTS:
        text = document.read_text()
        named = list(invocations(text))
        if document.name == "configuration.md":
            named += [[cell] for cell in re.findall(r"^\| `(--[a-z-]+)", text, re.M)]
        for words in named:
            command, after_flag = "bindu-mesh", False
            for word in words:
                if f"{command} {word}" in known:
                    command, after_flag = f"{command} {word}", False
                    continue
                flag = re.match(r"--([a-z][a-z-]*)", word)
                if not flag:
                    if not after_flag:
                        break  # prose or a picture, not a command line
                    after_flag = False  # the flag's value
                    continue
                after_flag = True
                if flag:
                    seen += 1
                    if flag.group(1) not in known[command]:
                        unknown.append(f"{document.relative_to(ROOT)}: {command} --{flag.group(1)}")
    assert seen >= 10, f"only {seen} flags found in the docs: the scan is broken"
    assert not unknown, f"the docs name flags the binary does not have: {unknown}"
