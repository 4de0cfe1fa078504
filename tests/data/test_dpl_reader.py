"""DPL-main / DPL-meta in the exact published schema, written independently of our writer."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dep_lightning.cli import main as cli_main
from dep_lightning.data.errors import ErrorLog, InputError
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.readers.dpl import load_dpl, split_files, write_dpl
from dep_lightning.data.schema import Item, Review
from dep_lightning.data.sources import DPLSource

REVIEW = pa.struct([("rating", pa.float64()), ("title", pa.string()), ("text", pa.string()),
                    ("asin", pa.string()), ("timestamp", pa.int64())])
MAIN = pa.schema([("user_id", pa.string()), ("profile", pa.list_(REVIEW)), ("data", REVIEW)])
META = pa.schema([("asin", pa.string()), ("title", pa.string()), ("description", pa.string())])


def review(asin, ts, rating=4.0, title="Great read", text=None):
    text = f"A long enough review text about {asin}." if text is None else text  # each review its own text
    return {"rating": rating, "title": title, "text": text, "asin": asin, "timestamp": ts}


ROWS = [
    {"user_id": "AHFGIFWFRGG4UKGJVMU5XJQH36RA",
     "profile": [review("B00005RDSN", 1645076985230, 4.0, "Flawed, but entertaining", "It seems as though Disney ..."),
                 review("B000NQRE1F", 1645076985999, 2.0, "Meh", "Não gostei — ünïcode ok 🎬")],
     "data": review("B000NQRE1E", 1645077000000, 5.0, "Actually lives up to the hype.", "James Cameron's TITANIC ...")},
    {"user_id": "U2", "profile": [review("B00005RDSN", 1500000000000)], "data": review("B000NQRE1F", 1600000000000)},
]
META_ROWS = [
    {"asin": "B00005RDSN", "title": "Titanic (Four-Disc Combo)", "description": "Experience Academy Award-winning ..."},
    {"asin": "B000NQRE1E", "title": "Avatar", "description": "Pandora ..."},
    {"asin": "B000NQRE1F", "title": "Heat", "description": ""},
]


def write_fixture(root, fmt):
    main, meta = root / "main" / "Movies_and_TV", root / "meta" / "Movies_and_TV"
    main.mkdir(parents=True)
    meta.mkdir(parents=True)
    if fmt == "parquet":
        # HF hub shard naming, to check split discovery.
        pq.write_table(pa.Table.from_pylist(ROWS, schema=MAIN), main / "train-00000-of-00001.parquet")
        pq.write_table(pa.Table.from_pylist(META_ROWS, schema=META), meta / "full-00000-of-00001.parquet")
    elif fmt == "jsonl":
        (main / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        (meta / "full.jsonl").write_text("".join(json.dumps(r) + "\n" for r in META_ROWS))
    else:  # HF datasets folders (DatasetDict.save_to_disk)
        import datasets

        features = datasets.Features.from_arrow_schema(MAIN)
        datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS, features=features)}).save_to_disk(str(main))
        datasets.DatasetDict({"full": datasets.Dataset.from_list(META_ROWS)}).save_to_disk(str(meta))
    return root / "main", root / "meta"


def assert_same_review(ours: Review, published: dict, user_id: str):
    assert (ours.item_id, ours.rating, ours.title, ours.text, ours.timestamp, ours.user_id) == (
        published["asin"], published["rating"], published["title"], published["text"], published["timestamp"], user_id)
    assert isinstance(ours.timestamp, int) and isinstance(ours.rating, float)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "hf_folder"])
def test_reads_every_field_of_published_schema(tmp_path, fmt):
    main, meta = write_fixture(tmp_path, fmt)
    data = load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())
    rows = data.split("Movies_and_TV", "train")
    assert len(rows) == len(ROWS)
    for ours, published in zip(rows, ROWS):
        assert ours.user_id == published["user_id"] and ours.category == "Movies_and_TV"
        assert len(ours.profile) == len(published["profile"])
        for got, want in zip(ours.profile, published["profile"]):
            assert_same_review(got, want, published["user_id"])
        assert_same_review(ours.target, published["data"], published["user_id"])
    for published in META_ROWS:
        assert data.items[published["asin"]] == Item(published["asin"], published["title"], published["description"],
                                                     "Movies_and_TV")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_writer_round_trip(tmp_path, fmt):
    main, meta = write_fixture(tmp_path / "src", "jsonl")
    data = load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())
    write_dpl(data, tmp_path / "out", fmt)
    back = load_dpl(tmp_path / "out" / "DPL-main", tmp_path / "out" / "DPL-meta", ["Movies_and_TV"], ["train"],
                    ErrorLog())
    assert back.rows == data.rows
    assert back.items == data.items


def test_description_list_is_joined(tmp_path):
    main, meta = write_fixture(tmp_path, "jsonl")
    (meta / "Movies_and_TV" / "full.jsonl").write_text("".join(
        json.dumps({**r, "description": ["First paragraph.", "", "Second."]}) + "\n" for r in META_ROWS))
    data = load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())
    assert data.items["B00005RDSN"].description == "First paragraph. Second."


def test_missing_split_is_a_clear_error(tmp_path):
    main, meta = write_fixture(tmp_path, "jsonl")
    with pytest.raises(FileNotFoundError, match="'Movies_and_TV' split 'test'"):
        load_dpl(main, meta, ["Movies_and_TV"], ["test"], ErrorLog())


def test_without_meta_items_get_placeholder(tmp_path):
    main, _ = write_fixture(tmp_path, "jsonl")
    data = load_dpl(main, None, ["Movies_and_TV"], ["train"], ErrorLog())
    item = data.item("B000NQRE1E", "Movies_and_TV")
    assert item.title == "Item B000NQRE1E" and item.description == "No description available."


# ------------------------------------------------------------------ one copy per split
def add_jsonl_copy(main, name="train.jsonl", rows=ROWS):
    (main / "Movies_and_TV" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_split_in_two_formats_is_an_error_naming_both_files(tmp_path):
    main, meta = write_fixture(tmp_path, "parquet")
    add_jsonl_copy(main)  # the same split again as JSON lines: read both, every row would count twice
    with pytest.raises(InputError) as info:
        load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())
    message = str(info.value)
    assert message.startswith(f"{main / 'Movies_and_TV'}: split stored more than once, field 'split', value 'train'")
    assert "train-00000-of-00001.parquet" in message and "train.jsonl" in message
    assert "format option (jsonl | parquet" in message and "\n" not in message


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_format_option_picks_one_copy(tmp_path, fmt):
    main, meta = write_fixture(tmp_path, "parquet")
    add_jsonl_copy(main)
    (meta / "Movies_and_TV" / "full.jsonl").write_text("".join(json.dumps(r) + "\n" for r in META_ROWS))
    data = DPLSource(str(main), str(meta), categories=["Movies_and_TV"], splits=["train"], format=fmt).load(
        ErrorLog(), PreprocessReport())
    assert [r.user_id for r in data.split("Movies_and_TV", "train")] == [r["user_id"] for r in ROWS]


def test_plain_file_beside_shards_is_an_error_even_with_a_format(tmp_path):
    main, meta = write_fixture(tmp_path, "parquet")
    pq.write_table(pa.Table.from_pylist(ROWS, schema=MAIN), main / "Movies_and_TV" / "train.parquet")
    for fmt in ("auto", "parquet"):
        with pytest.raises(InputError, match=r"parquet file: train\.parquet; parquet shards: "
                                             r"train-00000-of-00001\.parquet; .*keep one copy"):
            load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog(), format=fmt)


def test_gzipped_and_plain_json_lines_of_one_split_is_an_error(tmp_path):
    main, meta = write_fixture(tmp_path, "jsonl")
    with gzip.open(main / "Movies_and_TV" / "train.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(InputError, match=r"jsonl file: train\.jsonl, train\.jsonl\.gz"):
        load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog(), format="jsonl")


def test_hf_folder_beside_a_file_is_an_error(tmp_path):
    folder = tmp_path / "main" / "Books"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "state.json").write_text("{}")
    (folder / "train.jsonl").write_text("")
    with pytest.raises(InputError, match=r"hf folder: train; jsonl file: train\.jsonl"):
        split_files(tmp_path / "main", "Books", "train")
    assert split_files(tmp_path / "main", "Books", "train", "hf") == [folder / "train"]
    assert split_files(tmp_path / "main", "Books", "train", "jsonl") == [folder / "train.jsonl"]


def test_every_shard_is_read_once(tmp_path):
    main, meta = write_fixture(tmp_path, "parquet")
    folder = main / "Movies_and_TV"
    (folder / "train-00000-of-00001.parquet").unlink()
    pq.write_table(pa.Table.from_pylist(ROWS[:1], schema=MAIN), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[1:], schema=MAIN), folder / "train-00001-of-00002.parquet")
    # Other splits' files and a similarly named split are not this split's shards.
    pq.write_table(pa.Table.from_pylist(ROWS, schema=MAIN), folder / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS, schema=MAIN), folder / "trainer.parquet")
    data = load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())
    assert [r.user_id for r in data.split("Movies_and_TV", "train")] == [r["user_id"] for r in ROWS]


def test_incomplete_shards_are_an_error(tmp_path):
    main, meta = write_fixture(tmp_path, "parquet")
    folder = main / "Movies_and_TV"
    (folder / "train-00000-of-00001.parquet").rename(folder / "train-00000-of-00002.parquet")
    with pytest.raises(InputError, match=r"incomplete shards, field 'split', value 'train' \(found "
                                         r"train-00000-of-00002\.parquet; expected"):
        load_dpl(main, meta, ["Movies_and_TV"], ["train"], ErrorLog())


def test_format_with_no_such_copy_names_the_format(tmp_path):
    main, meta = write_fixture(tmp_path, "jsonl")
    with pytest.raises(FileNotFoundError, match="split 'train' in format 'parquet'"):
        load_dpl(main, None, ["Movies_and_TV"], ["train"], ErrorLog(), format="parquet")
    with pytest.raises(ValueError, match="'DPLSource.format', value 'csv' \\(must be one of"):
        DPLSource(str(main), format="csv")


def test_cli_prepare_reports_the_ambiguous_split_in_one_line(tmp_path, capsys):
    main, meta = write_fixture(tmp_path, "parquet")
    add_jsonl_copy(main)
    with pytest.raises(SystemExit) as info:
        cli_main(["prepare", "--source", "DPLSource", "--source.main", str(main), "--source.meta", str(meta),
                  "--source.categories", "[Movies_and_TV]", "--source.splits", "[train]"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"dep-lightning: error: {main / 'Movies_and_TV'}: split stored more than once")
    assert len(err.strip().splitlines()) == 1
