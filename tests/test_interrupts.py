"""Interrupted and concurrent work: kills, Ctrl-C, existing outputs, a full or unwritable disk.

``attnmel train`` runs as a real process on a small prepared ISIC 2017 subset (tiny width and
input, CPU, ``--deterministic``). A wrapper script pauses it at a chosen point (a training step,
or halfway through writing a checkpoint's temporary file) and says so through a file; the test
then kills it with SIGKILL, or presses Ctrl-C (SIGINT to its process group), and ``--resume``
must finish the run exactly as an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io import checkpoint as checkpoint_module
from attnmel_cli.io.checkpoint import read_tensors
from attnmel_cli.io.model_checkpoint import load_checkpoint, save_checkpoint
from attnmel_cli.io.run_dir import LAST, LOCK, METRICS, STATE

SUBSET = {"Training": (8, 16), "Validation": (6, 10)}  # (melanoma, other) per split
EPOCHS = 2  # 24 training images, melanoma ×4 → 48 draws → 3 steps of 16 per epoch
STEPS_PER_EPOCH = 3

pytestmark = pytest.mark.usefixtures("restore_logging")

# Runs attnmel's CLI with one pause point, chosen by $ATTNMEL_TEST_PAUSE:
#   step:N          before the N-th training step (1-based, over the whole run)
#   save:NAME:N     in the N-th write of NAME, its temporary file written halfway
# At the pause it creates $ATTNMEL_TEST_READY, then waits (up to a minute) for $…_GO.
WRAPPER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    pause_at = os.environ.get("ATTNMEL_TEST_PAUSE", "")
    ready, go = Path(os.environ["ATTNMEL_TEST_READY"]), Path(os.environ["ATTNMEL_TEST_GO"])

    def pause():
        ready.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    calls = [0]
    if pause_at.startswith("step:"):
        from attnmel_cli.engine import epoch
        real_loss, wanted = epoch.attnmel_loss, int(pause_at.split(":")[1])

        def loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == wanted:
                pause()
            return real_loss(*args, **kwargs)

        epoch.attnmel_loss = loss
    elif pause_at.startswith("save:"):
        from attnmel_cli.io import checkpoint
        _, name, n = pause_at.split(":")
        real_save = checkpoint.save_file

        def save_file(tensors, filename, metadata=None):
            if Path(filename).name.startswith(f".{name}."):
                calls[0] += 1
                if calls[0] == int(n):
                    real_save(tensors, filename, metadata=metadata)
                    data = Path(filename).read_bytes()
                    Path(filename).write_bytes(data[: len(data) // 2])  # half written
                    pause()
            return real_save(tensors, filename, metadata=metadata)

        checkpoint.save_file = save_file

    from attnmel_cli.cli import main
    main()
    """
)


@pytest.fixture(scope="module")
def prepared(isic2017_subset) -> Path:
    """24 training and 16 validation images of ISIC 2017 (no masks), through `prepare`."""
    return isic2017_subset(SUBSET, masks=False)


def _train_args(prepared: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(prepared), "--out", str(out), "--no-pretrained",
            "--width", "0.0625", "--image-size", "64", "--epochs", str(EPOCHS), "-b", "16",
            "--seed", "3", "--deterministic", "--device", "cpu", "-j", "0", *extra]


class Run:
    """One `attnmel train` process started through the wrapper, in its own process group."""

    def __init__(self, root: Path, name: str, args: list[str], pause: str = "") -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.ready, self.go = self.dir / "ready", self.dir / "go"
        wrapper = root / "wrapper.py"
        if not wrapper.exists():
            wrapper.write_text(WRAPPER)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTNMEL_TEST_PAUSE": pause,
               "ATTNMEL_TEST_READY": str(self.ready), "ATTNMEL_TEST_GO": str(self.go)}
        self.stdout, self.stderr = self.dir / "stdout", self.dir / "stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(wrapper), *args], stdout=out, stderr=err, env=env,
                start_new_session=True,  # its own process group, as a shell job has
            )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before the pause: {self.err()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no pause within {timeout} s: {self.err()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


def _epoch_of(path: Path) -> int:
    _, header = read_tensors(path)
    return int(json.loads(header["metrics"])["epoch"])


def _state_epoch(path: Path) -> int:
    _, header = read_tensors(path)
    return int(json.loads(header["state"])["epoch"])


@pytest.fixture(scope="module")
def interrupted(
    prepared: Path, tmp_path_factory: pytest.TempPathFactory, invoke, run_metrics
) -> dict[str, dict]:
    """Two runs interrupted again and again until they finish, and an uninterrupted one.

    A: SIGKILL mid-epoch 2 → --resume, SIGKILL halfway through writing last.safetensors →
       --resume, Ctrl-C halfway through writing it (the epoch is saved, then it stops).
    B: SIGKILL between writing last.safetensors and its training state → --resume (with a
       worker process), Ctrl-C mid-epoch → --resume to the end.
    The stages of A and B run side by side (the machine is small: each process mostly starts).
    Returns what was on disk after each interruption, by stage name.
    """
    root = tmp_path_factory.mktemp("kills")
    stages = [  # (name, run dir, pause point, signal or None, extra args)
        [("A1-kill-mid-epoch", "A", f"step:{STEPS_PER_EPOCH + 2}", signal.SIGKILL, []),
         ("B1-kill-writing-state", "B", f"save:{STATE}:2", signal.SIGKILL, [])],
        [("A2-kill-writing-last", "A", f"save:{LAST}:1", signal.SIGKILL, ["--resume"]),
         ("B2-ctrl-c-mid-epoch", "B", "step:2", signal.SIGINT, ["--resume", "-j", "1"])],
        [("A3-ctrl-c-writing-last", "A", f"save:{LAST}:1", signal.SIGINT, ["--resume"]),
         ("B3-resume", "B", "", None, ["--resume"])],
    ]
    facts: dict[str, dict] = {}
    for number, stage in enumerate(stages):
        runs = {
            name: (Run(root, name, _train_args(prepared, root / f"{run}-run", *extra), pause),
                   sig, root / f"{run}-run")
            for name, run, pause, sig, extra in stage
        }
        if number == 0:  # the uninterrupted run, in this process while those start
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the processes (OMP_NUM_THREADS=1): the same sums
            try:
                straight = invoke(*_train_args(prepared, root / "straight-run"))
            finally:
                torch.set_num_threads(threads)
            assert straight.exit_code == 0, straight.output
        for name, (run, sig, out) in runs.items():
            if sig is not None:
                run.wait_ready()
                os.killpg(run.proc.pid, sig)
                if sig == signal.SIGINT:
                    time.sleep(0.3)
                    run.go.touch()  # a pause inside a write goes on; one in a step was interrupted
            facts[name] = {"rc": run.wait(), "stderr": run.err(), "run": out}
        for name, (_, _, out) in runs.items():
            facts[name].update(
                last_epoch=_epoch_of(out / LAST) if (out / LAST).exists() else None,
                state_epoch=_state_epoch(out / STATE) if (out / STATE).exists() else None,
                last_loads=_loads(out / LAST),
                temporaries=sorted(p.name for p in out.glob(".*.tmp")),
                metrics_rows=len(run_metrics(out)) if (out / METRICS).exists() else 0,
            )
    facts["straight"] = {"run": root / "straight-run"}
    return facts


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except AttnMelError:
        return False
    return True


def _killed(facts: dict) -> None:
    assert facts["rc"] == -signal.SIGKILL, facts["stderr"]


def _ctrl_c(facts: dict, epoch: int) -> None:
    """Exit 130, one line saying which epoch is kept, no traceback, nothing half-written."""
    assert facts["rc"] == 130, facts["stderr"]
    assert "Traceback" not in facts["stderr"]
    lines = [line for line in facts["stderr"].splitlines() if "interrupted" in line]
    assert len(lines) == 1 and f"holds epoch {epoch}" in lines[0] and "--resume" in lines[0]
    assert facts["state_epoch"] == epoch and facts["last_loads"] and not facts["temporaries"]


def test_sigkill_mid_epoch_keeps_the_last_complete_epoch(interrupted) -> None:
    facts = interrupted["A1-kill-mid-epoch"]
    _killed(facts)
    assert facts["last_epoch"] == facts["state_epoch"] == 1 and facts["last_loads"]
    assert facts["metrics_rows"] == 1


def test_sigkill_while_writing_the_checkpoint_keeps_the_previous_one(interrupted) -> None:
    facts = interrupted["A2-kill-writing-last"]
    _killed(facts)  # …in a resumed run: --resume started from epoch 1
    # the half-written temporary file lies beside last.safetensors, which is epoch 1, whole
    assert facts["last_epoch"] == 1 and facts["last_loads"]
    assert [t for t in facts["temporaries"] if t.startswith(f".{LAST}.")], facts["temporaries"]


def test_ctrl_c_while_writing_waits_for_the_epoch_to_be_saved(interrupted) -> None:
    facts = interrupted["A3-ctrl-c-writing-last"]
    _ctrl_c(facts, epoch=2)  # --resume also cleared the temporary file the kill left
    assert facts["last_epoch"] == 2


def test_sigkill_between_the_checkpoint_and_its_state_still_resumes(interrupted) -> None:
    facts = interrupted["B1-kill-writing-state"]
    _killed(facts)
    # last.safetensors written for epoch 2, its training state not yet: still epoch 1
    assert facts["last_epoch"] == 2 and facts["state_epoch"] == 1
    _ctrl_c(interrupted["B2-ctrl-c-mid-epoch"], epoch=1)  # --resume went on from epoch 1


def test_interrupted_runs_finish_as_the_uninterrupted_one(interrupted, assert_same_run) -> None:
    resumed = interrupted["B3-resume"]
    assert resumed["rc"] == 0, resumed["stderr"]
    for finished in (interrupted["A3-ctrl-c-writing-last"], resumed):
        assert_same_run(finished["run"], interrupted["straight"]["run"])


# ── concurrent runs ───────────────────────────────────────────────────────────────────────────


def test_a_second_run_in_the_same_run_dir_is_refused(
    prepared: Path, tmp_path: Path, invoke
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    import fcntl

    with (out / LOCK).open("w") as held:  # as a running `attnmel train` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke(*_train_args(prepared, out))
    assert result.exit_code == 1 and "another attnmel train is running" in result.stderr
    assert not (out / METRICS).exists()


# ── existing outputs are never overwritten without --force ────────────────────────────────────

PRECIOUS = b"precious: not to be overwritten"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _refused_then_forced(
    invoke, args: list, precious: Path, code: int, force_code: int = 0
) -> None:
    """``args`` leaves ``precious`` as it was and says --force; with --force it is replaced."""
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert "--force" in result.stderr and "Traceback" not in result.output
    assert precious.read_bytes() == PRECIOUS
    forced = invoke(*args, "--force")
    assert forced.exit_code == force_code, forced.output
    assert precious.read_bytes() != PRECIOUS


def test_outputs_are_not_overwritten_without_force(
    tiny_checkpoint: Path, labelled: Path, prepared: Path, tmp_path: Path, invoke
) -> None:
    photo, ckpt = labelled / "p0.jpg", tiny_checkpoint
    overlay = tmp_path / "overlay.png"
    overlay.write_bytes(PRECIOUS)
    _refused_then_forced(invoke, ["predict", photo, "-c", ckpt, "-j", "0", "--overlay", overlay],
                         overlay, code=1)
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / "p0_attention.png").write_bytes(PRECIOUS)
    _refused_then_forced(invoke,
                         ["predict", photo, "-c", ckpt, "-j", "0", "--overlay-dir", overlays],
                         overlays / "p0_attention.png", code=2)  # that image fails, others go on
    explained = tmp_path / "explained"
    explained.mkdir()
    (explained / "p0_composite.png").write_bytes(PRECIOUS)
    _refused_then_forced(invoke, ["explain", photo, "-c", ckpt, "-j", "0", "-o", explained],
                         explained / "p0_composite.png", code=2)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_bytes(PRECIOUS)
    _refused_then_forced(invoke, ["evaluate", "--data", labelled, "-c", ckpt, "-j", "0",
                                  "--bootstrap", "0", "-o", report],
                         report / "report.json", code=1)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "notes.txt").write_bytes(PRECIOUS)
    result = invoke("prepare", labelled, "--out", dataset)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert (dataset / "notes.txt").read_bytes() == PRECIOUS and len(list(dataset.iterdir())) == 1
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).write_bytes(PRECIOUS)
    _refused_then_forced(invoke, _train_args(prepared, run, "--epochs", "1"), run / METRICS,
                         code=1)


# ── a full disk, an output folder that cannot be written ──────────────────────────────────────


@pytest.fixture
def disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every rename onto a file under ``tmp_path`` fails as on a full disk (ENOSPC)."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(tmp_path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return tmp_path


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.tmp")], list(folder.rglob("*.tmp"))


def test_disk_full_is_one_clear_line_and_loses_nothing(
    tiny_checkpoint: Path, labelled: Path, disk_full: Path, invoke
) -> None:
    overlay = disk_full / "overlay.png"
    overlay.write_bytes(PRECIOUS)
    result = invoke("predict", labelled / "p0.jpg", "-c", tiny_checkpoint, "-j", "0",
                    "--overlay", overlay, "--force")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert str(overlay) in line and "No space left on device" in line
    assert overlay.read_bytes() == PRECIOUS
    report = disk_full / "report"
    report.mkdir()
    (report / "report.json").write_bytes(PRECIOUS)
    result = invoke("evaluate", "--data", labelled, "-c", tiny_checkpoint, "-j", "0",
                    "--bootstrap", "0", "-o", report, "--force")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.stderr
    assert (report / "report.json").read_bytes() == PRECIOUS
    _no_temporaries(disk_full)


def test_checkpoint_write_failing_midway_keeps_the_previous_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors reports a full disk as SafetensorError (not OSError): still one clean error."""
    target = tmp_path / LAST
    shutil.copy(tiny_checkpoint, target)
    before = target.read_bytes()
    model, meta = load_checkpoint(target)

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    with pytest.raises(AttnMelError, match=r"cannot write.*No space left on device"):
        save_checkpoint(target, model, meta)
    assert target.read_bytes() == before
    _no_temporaries(tmp_path)


@contextlib.contextmanager
def _small_tmpfs(folder: Path, size_kib: int) -> Iterator[Path]:
    """A real filesystem of ``size_kib`` mounted on ``folder`` (root and mount permitted)."""
    folder.mkdir()
    if not (sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mount")):
        pytest.skip("mounting a small tmpfs needs Linux and root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_really_full_disk_keeps_the_previous_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    size = tiny_checkpoint.stat().st_size
    with _small_tmpfs(tmp_path / "small", size_kib=2 * size // 1024 + 64) as small:
        target = small / LAST
        shutil.copy(tiny_checkpoint, target)
        free = shutil.disk_usage(small).free
        (small / "filler").write_bytes(b"\0" * max(0, free - size // 2))
        model, meta = load_checkpoint(target)
        with pytest.raises(AttnMelError, match=r"cannot write.*No space left on device"):
            save_checkpoint(target, model, meta)
        assert target.read_bytes() == tiny_checkpoint.read_bytes()
        assert sorted(p.name for p in small.iterdir()) == ["filler", LAST]


def test_output_folder_that_cannot_be_created_fails_before_any_work(
    tiny_checkpoint: Path, labelled: Path, prepared: Path, tmp_path: Path, invoke
) -> None:
    """As root a read-only folder can still be written: a path under a regular file cannot."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    photo, ckpt, bad = labelled / "p0.jpg", tiny_checkpoint, blocker / "out"
    for args in (
        ["predict", photo, "-c", ckpt, "-j", "0", "--overlay-dir", bad],
        ["predict", photo, "-c", ckpt, "-j", "0", "--overlay", bad / "o.png"],
        ["explain", photo, "-c", ckpt, "-j", "0", "-o", bad],
        ["evaluate", "--data", labelled, "-c", ckpt, "-j", "0", "--bootstrap", "0", "-o", bad],
        ["prepare", labelled, "--out", bad],
        _train_args(prepared, bad),
    ):
        result = invoke(*args)
        assert result.exit_code == 1, (args[0], result.output)
        assert "Traceback" not in result.output and not result.stdout, (args[0], result.output)
        (line,) = result.stderr.strip().splitlines()
        assert str(bad) in line and "Not a directory" in line, (args[0], line)


# ── every write goes through attnmel_cli.io.atomic ────────────────────────────────────────────

# call name → which argument is the file written: an index, or "self" for path.write_text(…)
WRITERS: dict[str, int | str] = {
    "save": 0, "savefig": 0, "to_csv": 0, "savez": 0, "savez_compressed": 0, "save_file": 1,
    "dump": 1, "write_text": "self", "write_bytes": "self", "touch": "self",
}
MODULE_SAVES = {("torch", "save"): 1, ("np", "save"): 0, ("onnx", "save"): 1}
TEMPORARY = {"tmp", "fh"}  # the names atomic.py's temporary path (or a handle on it) goes by


def _target(node, name: str, receiver) -> object:
    """The expression naming the file a writing call writes, or None if it does not write."""
    import ast

    if name == "open":
        mode = next((a.value for a in [*node.args, *(k.value for k in node.keywords)]
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)), "r")
        if not set(mode) & set("wax+"):
            return None
        return receiver if receiver is not None else node.args[0]
    if isinstance(receiver, ast.Name) and (receiver.id, name) in MODULE_SAVES:
        return node.args[MODULE_SAVES[receiver.id, name]]
    where = WRITERS.get(name)
    if where is None:
        return None
    if where == "self":
        return receiver
    return node.args[where] if len(node.args) > where else None


def test_every_file_write_goes_through_the_atomic_writers() -> None:
    """A static audit: outside io/atomic.py, each call that writes a file writes the temporary path
    that attnmel_cli.io.atomic hands out (``tmp``, or a handle ``fh`` opened on it), never the
    target itself; so that every output is renamed into place whole."""
    import ast

    package = Path(__file__).resolve().parents[1] / "attnmel_cli"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == "io/atomic.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_memory = {  # names bound to io.BytesIO() / io.StringIO(): no file is written
            t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", "") in ("BytesIO", "StringIO")
            for t in node.targets if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            receiver = func.value if isinstance(func, ast.Attribute) else None
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target = _target(node, name, receiver)
            if target is None:
                continue
            if isinstance(target, ast.Call) and getattr(target.func, "id", "") == "str":
                target = target.args[0]  # str(tmp)
            if isinstance(target, ast.Name) and target.id in TEMPORARY | in_memory:
                continue
            offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}")
    assert not offenders, "writes that bypass attnmel_cli.io.atomic:\n" + "\n".join(offenders)
