"""What a person reads: progress in a log is plain lines, few of them (a terminal keeps its bar; -q is
silent); a frame range written as PNGs keeps its frame numbers; every command says its version."""

from __future__ import annotations

import io

import cli
from compress.progress import StageProgress, clock
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_first_line_then_one_an_interval_and_the_last_epoch():
    log = io.StringIO()
    stage = StageProgress("fit", 100, stream=log)
    for epoch in range(1, 101):
        stage.update(epoch, 100, 0.5 / epoch, 20.0 + epoch / 10)
    stage.write("fit: a message")
    stage.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("fit: epoch 1/100 (1 %), 0:00 elapsed, about ") and "PSNR 20.10 dB" in lines[0]
    assert lines[1] == "fit: a message"
    assert lines[2].startswith("fit: epoch 100/100 (100 %)") and "left" not in lines[2] and len(lines) == 3


def test_with_no_interval_every_epoch_is_a_line_and_the_total_may_change():
    log = io.StringIO()
    stage = StageProgress("fine-tune", 4, stream=log, interval=0.0)
    for epoch, total in ((1, 4), (2, 4), (3, 3)):
        stage.update(epoch, total, 1.0, 30.0)
    stage.close()
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == [
        "fine-tune: epoch 1/4 (25 %)", "fine-tune: epoch 2/4 (50 %)", "fine-tune: epoch 3/3 (100 %)"]


def test_a_terminal_keeps_its_bar_and_quiet_is_silent():
    term = _Terminal()
    stage = StageProgress("fit", 3, stream=term)
    for epoch in (1, 2, 3):
        stage.update(epoch, 3, 0.1, 25.0)
    stage.close()
    assert "\r" in term.getvalue() and "fit" in term.getvalue()
    quiet = io.StringIO()
    stage = StageProgress("fit", 3, enabled=False, stream=quiet)
    stage.update(1, 3, 0.1, 25.0)
    stage.write("x")
    stage.close()
    assert quiet.getvalue() == ""
    assert clock(59.6) == "1:00" and clock(3725) == "1:02:05"


def test_a_plain_command_writes_a_short_log_without_carriage_returns(tmp_path, capsys):
    source = tmp_path / "clip.mkv"
    write_video(source, smooth_clip(4, 32, 48), fps=24)
    assert cli.compress_main([str(source), "-o", str(tmp_path / "c.bin"), "--preset", "test-tiny", "--epochs",
                              "30"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) < 20, err
    assert "fit: epoch 30/30 (100 %)" in err


def test_a_frame_range_into_a_folder_keeps_the_source_frame_numbers(tmp_path, capsys):
    from tests.test_decode import make_bitstream

    source = tmp_path / "v.bin"
    source.write_bytes(make_bitstream(32, 24, 16))
    out = tmp_path / "frames"
    assert cli.decompress_main([str(source), "-o", f"{out}/", "--frames", "10:13"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00010.png", "00011.png", "00012.png"]


def test_every_command_says_its_version(capsys):
    import pytest

    from benchmarks.rd import main as bench

    for main in (cli.compress_main, cli.decompress_main, bench):
        with pytest.raises(SystemExit) as exit_:
            main(["--version"])
        assert exit_.value.code == 0
        out = capsys.readouterr()
        assert "enerv-codec" in out.out + out.err and "bitstream format 4" in out.out + out.err
