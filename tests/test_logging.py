"""The command line's logging setup survives being run in-process: its handler writes to the
stderr of the moment, never to a stream that CliRunner (or a notebook) has closed since."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_a_message_after_an_in_process_run_reaches_the_current_stderr(invoke, tmp_path,
                                                                      capsys) -> None:
    result = invoke("export", tmp_path / "none.safetensors", "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1 and "not found" in result.output  # CliRunner's stderr: closed
    logging.getLogger("attnmel").warning("after the run")
    err = capsys.readouterr().err
    assert "attnmel: after the run" in err and "Logging error" not in err
