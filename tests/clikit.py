"""Running the `oneml` command in-process for tests: (exit code, stdout, stderr)."""

from __future__ import annotations

from oneml.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
