"""pipeline.sources: the source-list formats and every way a row can be wrong, as file:line: problem."""

from pathlib import Path

import pytest

from conftest import ROOT
from pipeline.sources import SourceListError, check_url, read_id_lists, read_source_list, safe_video_id


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_csv(tmp_path):
    path = write(tmp_path, "video_id,url,start_frame,end_frame\nabc,https://x.org/a.mp4,3,10\n")
    rows, problems = read_source_list(path)
    assert problems == []
    assert [(r.video_id, r.start_frame, r.end_frame, r.source_line) for r in rows] == [("abc", 3, 10, 2)]


@pytest.mark.parametrize(
    "line, message",
    [
        (",https://x.org/a.mp4,1,2", "missing video_id"),
        ("a,,1,2", "missing url"),
        ("a,https://x.org/a.mp4,,2", "missing start_frame"),
        ("a,https://x.org/a.mp4,5,2", "end_frame 2 < start_frame 5"),
        ("a,https://x.org/a.mp4,-1,2", "start_frame -1 is negative"),
        ("a,https://x.org/a.mp4,1.5,2", "start_frame '1.5' is not an integer"),
        ("a,https://x.org/a.mp4,one,2", "start_frame 'one' is not an integer"),
        ("../../etc/passwd,https://x.org/a.mp4,1,2", "is not a safe file name"),
        ("a/b,https://x.org/a.mp4,1,2", "is not a safe file name"),
        ("a,ftp://x.org/a.mp4,1,2", "scheme 'ftp' is not allowed"),
        ("a,file:///etc/passwd,1,2", "scheme 'file' is not allowed"),
        ("a,javascript:alert(1),1,2", "scheme 'javascript' is not allowed"),
    ],
)
def test_malformed_rows_name_file_line_and_problem(tmp_path, line, message):
    path = write(tmp_path, "video_id,url,start_frame,end_frame\nok1,https://x.org/o.mp4,0,1\n" + line + "\n")
    rows, problems = read_source_list(path)
    assert [r.video_id for r in rows] == ["ok1"]
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:3: ")
    assert message in problems[0]


def test_duplicate_ids_point_to_first_line(tmp_path):
    path = write(tmp_path, "video_id,url,start_frame,end_frame\na,https://x/1,0,1\nb,https://x/2,0,1\na,https://x/3,0,1\n")
    rows, problems = read_source_list(path)
    assert [r.video_id for r in rows] == ["a", "b"]
    assert problems == [f"{path}:4: duplicate video_id 'a' (first on line 2)"]


def test_missing_header_column(tmp_path):
    path = write(tmp_path, "video_id,url,start\na,https://x/1,0\n")
    with pytest.raises(SourceListError, match="header lacks column"):
        read_source_list(path)


def test_official_text_format_and_candidates(tmp_path):
    path = write(tmp_path, "abc 10 20\nnone None None\nbad 5\nxyz 7 3\n", name="ranges.txt")
    rows, problems = read_source_list(path)
    assert [(r.video_id, r.url) for r in rows] == [("abc", "https://www.youtube.com/watch?v=abc")]
    assert problems == [f"{path}:3: expected 3 fields '<id> <start_frame> <end_frame>', found 2",
                        f"{path}:4: end_frame 3 < start_frame 7"]


def test_file_urls_only_when_enabled():
    with pytest.raises(ValueError):
        check_url("file:///tmp/x.mp4")
    assert check_url("file:///tmp/x.mp4", allow_file_urls=True) == "file:///tmp/x.mp4"


@pytest.mark.parametrize("bad", ["", ".", "..", "a..b", "a b", "-" * 200, "a;rm"])
def test_unsafe_ids_rejected(bad):
    with pytest.raises(ValueError):
        safe_video_id(bad)


def test_shipped_wflw_v_list_is_the_official_one():
    rows, problems = read_source_list(ROOT / "manifests" / "sources" / "wflw_v.csv")
    assert problems == []
    assert len(rows) == 1000
    assert sum(r.official_subset == "hard" for r in rows) == 500
    lengths = [r.end_frame - r.start_frame + 1 for r in rows]
    assert min(lengths) == 120 and max(lengths) == 151
    assert sum(lengths) == 137_730


def test_id_lists(tmp_path):
    easy, hard = write(tmp_path, "a\nb\n", "e.txt"), write(tmp_path, "c\n", "h.txt")
    assert read_id_lists(easy, hard) == {"a": "easy", "b": "easy", "c": "hard"}


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfvideo_id,url,start_frame,end_frame\nabc,https://x.org/a.mp4,3,10\n")
    rows, problems = read_source_list(path)
    assert problems == [] and [r.video_id for r in rows] == ["abc"]


def test_non_utf8_line_is_a_row_problem(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"video_id,url,start_frame,end_frame\nok,https://x/1,0,1\nb\xe9,https://x/2,0,1\n")
    rows, problems = read_source_list(path)
    assert [r.video_id for r in rows] == ["ok"]
    assert problems == [f"{path}:3: not valid UTF-8 (byte 0xe9 at column 2)"]
    text = tmp_path / "latin1.txt"
    text.write_bytes(b"abc 1 2\n\xff\xfe 1 2\n")
    rows, problems = read_source_list(text)
    assert [r.video_id for r in rows] == ["abc"] and problems == [f"{text}:2: not valid UTF-8 (byte 0xff at column 1)"]
    header = tmp_path / "header.csv"
    header.write_bytes(b"vid\xe9o_id,url,start_frame,end_frame\n")
    with pytest.raises(SourceListError, match=r"header\.csv:1: header is not valid UTF-8"):
        read_source_list(header)


def test_non_utf8_id_list_names_file_and_line(tmp_path):
    easy = tmp_path / "easy.txt"
    easy.write_bytes(b"a\n\xff\n")
    with pytest.raises(SourceListError, match=r"easy\.txt:2: not valid UTF-8"):
        read_id_lists(easy, None)


@pytest.mark.parametrize("line, message", [
    ("a,https://x/1,9223372036854775808,9223372036854775809", "start_frame 9223372036854775808 is beyond the int64"),
    ("a,https://x/1,0," + "9" * 5000, "end_frame 999999999999999999999999... is beyond the int64 range"),
    ("a,https://x/1,0,5,medium", "official_subset 'medium' is not one of easy, hard"),
    ("a,https://x/1,0,5,easy,surplus", "1 field(s) beyond the header's 5 columns"),
])
def test_more_malformed_rows(tmp_path, line, message):
    path = write(tmp_path, "video_id,url,start_frame,end_frame,official_subset\n" + line + "\n")
    rows, problems = read_source_list(path)
    assert rows == [] and len(problems) == 1
    assert problems[0].startswith(f"{path}:2: ") and message in problems[0]


def test_subset_column_values(tmp_path):
    path = write(tmp_path, "video_id,url,start_frame,end_frame,official_subset\na,https://x/1,0,5,hard\n"
                           "b,https://x/2,0,5,\n")
    rows, problems = read_source_list(path)
    assert problems == [] and [r.official_subset for r in rows] == ["hard", None]
