"""template.yaml passes cfn-lint with no finding at all (sam validate and sam build run in
scripts/check-template.sh, which `make test` calls after pytest)."""

from __future__ import annotations

from pathlib import Path

from cfnlint.api import ManualArgs, lint_file

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def test_cfn_lint_reports_no_errors_warnings_or_informational_findings() -> None:
    matches = lint_file(
        TEMPLATE,
        config=ManualArgs(include_checks=["I"], regions=["eu-west-1", "us-east-1"]),
    )

    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_cfn_lint_catches_a_visibility_timeout_out_of_range(tmp_path: Path) -> None:
    # Guards the test above: the linter runs and does report, through this API, on this template.
    broken = tmp_path / "template.yaml"
    broken.write_text(
        TEMPLATE.read_text(encoding="utf-8").replace("VisibilityTimeout: 720", "VisibilityTimeout: 99999"),
        encoding="utf-8",
    )

    matches = lint_file(broken, config=ManualArgs(include_checks=["I"], regions=["eu-west-1"]))

    assert [m.rule.id for m in matches] == ["E3034"]
