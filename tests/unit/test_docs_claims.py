"""The docs describe what exists: every CLI command, configuration key and environment variable
they name is real, and every real one is documented. The real sets come from the code (the
argparse command tree, the pydantic TenantConfig models, the Settings model), not from a list."""

from __future__ import annotations

import argparse
import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from emailrouter.cli.main import build_parser
from emailrouter.config import Settings
from emailrouter.tenancy.importer import _OPERATOR_KEYS
from emailrouter.tenancy.models import MailboxConfig, TenantConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


# ---- what exists ------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_commands() -> set[str]:
    """Every leaf command, as typed: `tenants import`, `ingest`, `local up`."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        children = _subcommands(parser)
        if not children and path:
            found.add(" ".join(path))
        for name, child in children.items():
            walk(child, [*path, name])

    walk(build_parser(), [])
    return found


def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation if issubclass(annotation, BaseModel) else None
    for argument in typing.get_args(annotation):  # list[X], X | None
        inner = _model_of(argument)
        if inner is not None:
            return inner
    return None


def config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted keys of a configuration model; nested sections expand, the mailbox list does not
    (it has its own table)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        nested = _model_of(info.annotation)
        if nested is MailboxConfig:
            continue
        if nested is not None:
            keys |= config_keys(nested, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def environment_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# ---- what the docs say ------------------------------------------------------------------------


def _code(text: str) -> list[str]:
    """Code in Markdown: fenced blocks and `spans` (where commands and keys are named)."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def documented_commands() -> dict[str, set[str]]:
    """Command mentions (`emailrouter WORD [WORD]`) per document, as far as words go."""
    mentions: dict[str, set[str]] = {}
    for path in DOCS:
        for code in _code(path.read_text(encoding="utf-8")):
            for match in re.finditer(r"(?<![\w/.-])emailrouter((?: [a-z][a-z-]*){1,3})", code):
                mentions.setdefault(_as_command(match.group(1).split()), set()).add(path.name)
    return mentions


def _as_command(words: list[str]) -> str:
    """The longest run of leading words that names a command or a command group; the words
    after it are arguments (`tenants import contoso`). Nothing known: all the words."""
    real = cli_commands()
    known = real | {" ".join(c.split()[:n]) for c in real for n in range(1, len(c.split()))}
    for n in range(len(words), 0, -1):
        if " ".join(words[:n]) in known:
            return " ".join(words[:n])
    return " ".join(words)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _table_keys(table: str) -> set[str]:
    """First-column keys of Markdown table rows; `.x` continues the previous key's section."""
    keys: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        section = ""
        for key in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if key.startswith("."):
                keys.add(section + key[1:])
            else:
                keys.add(key)
                section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    return keys


def documented_tenant_and_mailbox_keys() -> tuple[set[str], set[str]]:
    reference = _section(README.read_text(encoding="utf-8"), "## Configuration reference")
    tenant_part, mailbox_part = reference.split("Mailbox (`mailboxes[]`):", 1)
    return _table_keys(tenant_part), _table_keys(mailbox_part.split("Function environment", 1)[0])


# ---- the checks -------------------------------------------------------------------------------


def test_every_command_the_docs_name_exists() -> None:
    real = cli_commands()
    words = [c.split() for c in real]
    groups = {" ".join(w[:n]) for w in words for n in range(1, len(w))}
    wrong = {
        mention: sorted(files)
        for mention, files in documented_commands().items()
        if mention not in real and mention.split()[0] not in real and mention not in groups
    }
    assert wrong == {}, f"the docs name commands that do not exist: {wrong}"


def test_every_command_is_documented() -> None:
    mentioned = set(documented_commands())
    missing = sorted(c for c in cli_commands() if c not in mentioned)
    assert missing == [], f"commands not named in README.md or docs/: {missing}"


def test_every_tenant_key_in_the_readme_exists_and_every_key_is_there() -> None:
    tenant_doc, mailbox_doc = documented_tenant_and_mailbox_keys()
    real_tenant, real_mailbox = config_keys(TenantConfig), config_keys(MailboxConfig)

    assert sorted(tenant_doc - real_tenant) == [], "documented tenant keys that do not exist"
    assert sorted(real_tenant - tenant_doc) == [], "tenant keys missing from the README's table"
    assert sorted(mailbox_doc - real_mailbox) == [], "documented mailbox keys that do not exist"
    assert sorted(real_mailbox - mailbox_doc) == [], "mailbox keys missing from the README's table"


def test_dotted_keys_named_anywhere_in_the_docs_exist() -> None:
    real = config_keys(TenantConfig)
    sections = {key.split(".")[0] for key in real if "." in key}
    named = {
        code
        for path in DOCS
        for code in _code(path.read_text(encoding="utf-8"))
        if re.fullmatch(r"[a-z_]+\.[a-z_]+", code) and code.split(".")[0] in sections
    }
    refused = {f"outbound.{key}" for key in _OPERATOR_KEYS}  # named to say the import refuses them
    assert sorted(named - real - refused) == []


def test_environment_variables_documented_are_read_and_those_read_are_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = _section(text, "## Settings of the functions")
    documented = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }
    read = environment_variables()

    assert sorted(read - documented) == [], "variables config.py reads but docs/configuration.md omits"
    assert sorted(n for n in documented - read if not n.startswith("POWERTOOLS_")) == []
    readme_env = _section(README.read_text(encoding="utf-8"), "## Configuration reference").split(
        "Function environment", 1
    )[1]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme_env.split("\n\n", 1)[0]))
    assert sorted(n for n in named - read if not n.startswith("POWERTOOLS_")) == []
    assert sorted(read - named) == [], "variables config.py reads but the README's list omits"


def test_files_the_docs_point_to_exist() -> None:
    pointed = {
        (path.name, target)
        for path in DOCS
        for target in re.findall(
            r"(?<![\w/.-])((?:docs|demo|tests|bench|functions|layers|emulators|scripts)/[\w./-]*\w)",
            path.read_text(encoding="utf-8"),
        )
        if "<" not in target
    }
    missing = sorted((name, target) for name, target in pointed if not (ROOT / target).exists())
    assert missing == []


def test_emailrouter_variables_of_the_cli_and_local_stack_are_documented() -> None:
    """`EMAILROUTER_*` variables read anywhere in the package, against docs/configuration.md."""
    package = ROOT / "layers" / "core" / "emailrouter"
    read = {
        name
        for path in package.rglob("*.py")
        for name in re.findall(r"\"(EMAILROUTER_[A-Z0-9_]+)\"", path.read_text(encoding="utf-8"))
    }
    documented = set(
        re.findall(
            r"`(EMAILROUTER_[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
        )
    )
    assert read, "the package reads EMAILROUTER_STACK_FILE at least"
    assert sorted(read - documented) == [] and sorted(documented - read) == []
