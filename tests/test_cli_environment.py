"""The CLI in the places users run it: outputs behind symbolic links, locales that are not UTF-8, stdout
piped into a reader that stops early, model paths holding '='."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ldmkit.cli import main
from ldmkit.cli.common import check_text
from ldmkit.cli.serve import model_specs
from ldmkit.errors import UsageError
from ldmkit.progress import NOT_A_TERMINAL_INTERVAL, tqdm
from tests.tiny_models import build_tiny_model

PY = [sys.executable, "-m", "ldmkit.cli"]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("LDMKIT_DEBUG", "LC_ALL", "LANG", "PYTHONIOENCODING")},
       "OMP_NUM_THREADS": "1"}
C_LOCALE = {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}  # sys.argv's UTF-8 bytes as surrogates


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("environment") / "tiny")


def _run(argv, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *argv], capture_output=True, env={**ENV, **(env or {})}, timeout=600, **kw)


# ---- outputs behind a symbolic link: written into the link's target, the link kept


def test_data_pack_writes_its_shards_through_a_link_to_an_empty_folder(tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["data", "pack", "shapes", "--out", str(link), "--num-samples", "10", "--image-size", "16",
                 "--shard-size", "4", "--no-progress"]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert sorted(p.name for p in target.iterdir()) == ["000000.tar", "000001.tar", "000002.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]  # no temporary folder left


@pytest.mark.parametrize("full", [False, True], ids=["empty", "non-empty with --overwrite"])
def test_convert_writes_through_a_link_to_a_folder(tiny, tmp_path, full, capsys):
    target = tmp_path / "target"
    target.mkdir()
    if full:
        (target / "stale.txt").write_text("an earlier run's file")
    link = tmp_path / "out"
    link.symlink_to(target)
    assert main(["convert", str(tiny), "--to", "ldmkit", "--out", str(link), *(["--overwrite"] if full else [])]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert (target / "config.yaml").is_file() and not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"]  # no .out.old-PID, no temporary folder


# ---- locales whose encoding is not UTF-8


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
def test_help_prints_under_a_latin1_terminal(argv):
    done = _run(argv, {"PYTHONIOENCODING": "latin-1"})
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert b"usage: ldmkit" in done.stdout


def test_eval_report_prints_under_a_latin1_terminal_and_writes_its_json(tiny, tmp_path):
    report = tmp_path / "report.json"
    done = _run(["eval", "generate", "--model", str(tiny), "--num-images", "2", "--steps", "1", "--batch-size", "2",
                 "--no-progress", "--json", str(report)], {"PYTHONIOENCODING": "latin-1"})
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert report.is_file() and f"wrote {report}".encode() in done.stdout


def test_check_text_reads_utf8_bytes_that_arrived_as_surrogates():
    assert check_text("a red c\udcc3\udcadrcle", "the prompt") == "a red círcle"  # b"\xc3\xad": í
    with pytest.raises(UsageError, match="byte 0xff at character 3"):  # not UTF-8 at all: still refused
        check_text("a \udcffcircle", "the prompt")


def test_a_utf8_prompt_under_the_c_locale_draws_what_it_draws_under_utf8(tiny, tmp_path):
    images = {}
    for name, env in (("c", C_LOCALE), ("utf8", {"LC_ALL": "C.UTF-8"})):
        images[name] = tmp_path / f"{name}.png"
        done = _run(["generate", "a red círcle", "--model", str(tiny), "--steps", "2", "--seed", "3",
                     "--no-progress", "--out", str(images[name])], env)
        assert done.returncode == 0, (name, done.stderr.decode(errors="replace"))
    assert images["c"].read_bytes() == images["utf8"].read_bytes()


# ---- stdout piped into a reader that stops early


def test_eval_piped_into_a_reader_that_stops_writes_its_json_without_a_traceback(tiny, tmp_path):
    report = tmp_path / "report.json"
    command = " ".join([*PY, "eval", "generate", "--model", str(tiny), "--num-images", "2", "--steps", "1",
                        "--batch-size", "2", "--no-progress", "--json", str(report)])
    done = subprocess.run(["bash", "-c", f'{command} 2>"{tmp_path}/err" | true; echo "${{PIPESTATUS[0]}}"'],
                          capture_output=True, env=ENV, timeout=600, text=True)
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert done.stdout.strip() == "141"  # as a tool that SIGPIPE ended
    assert report.is_file()


# ---- serve --model: a path that holds '='


def test_serve_model_takes_an_existing_path_with_an_equals_sign_as_a_path(tmp_path):
    folder = tmp_path / "lr=1e-3" / "model"
    folder.mkdir(parents=True)
    assert model_specs([str(folder)]) == [("model", str(folder))]
    with pytest.raises(UsageError, match=r"--model NAME=PATH"):  # neither a path nor a valid NAME=PATH
        model_specs([str(tmp_path / "lr=1e-4" / "model")])


def test_an_error_of_a_subcommand_names_it_as_typed(tmp_path, capsys):
    """`ldmkit eval generate` and `ldmkit data cache` say so in their errors, as argparse's own do."""
    assert main(["eval", "generate", "--model", str(tmp_path / "nope"), "--num-images", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldmkit eval generate: error:") and "nope" in err, err


def test_a_progress_bar_into_a_file_redraws_twice_a_minute_at_most():
    """A long run's log (stderr to a file) gets a bar line per half minute, not ten a second; on a terminal the
    bar is tqdm's own."""
    log = io.StringIO()
    with tqdm(total=1000, file=log, desc="training") as bar:
        for step in range(1000):
            bar.update(1)
            bar.set_postfix(loss=1 / (step + 1))  # as training shows its loss at every step
    assert bar.mininterval == NOT_A_TERMINAL_INTERVAL == 30.0
    assert log.getvalue().count("\r") <= 3 and "1000/1000" in log.getvalue()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert tqdm(total=1, file=Terminal()).mininterval == 0.1
