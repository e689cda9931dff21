"""Project.create / open / status: seed labels in, clear errors for bad input, never a half-made project."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import BadInputError, DataNotFoundError, EmptyClassError, UnknownLabelError
from metalabel.project import Project
from metalabel.store import ProjectStore, path_sha256

POOL_URIS = [f"/data/pool/{folder}/{n}.txt" for folder in ("cats", "dogs") for n in range(4)]


def make_pool(uris=POOL_URIS, *, texts=None, labels=None, class_names=()) -> LabeledDataset:
    texts = texts or [f"text of {uri}" for uri in uris]
    labels = [UNLABELED] * len(uris) if labels is None else labels
    return LabeledDataset("pool", "text", texts, np.array(labels), list(class_names), list(uris))


def write_csv(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def seed_csv(tmp_path):
    return write_csv(tmp_path / "seed.csv", "uri,label\ncats/0.txt,cat\n/data/pool/dogs/1.txt,dog\n\ndogs/2.txt,dog\n")


def leftovers(tmp_path):
    """Anything in tmp_path but the input files: a project folder or a staging folder."""
    return sorted(path.name for path in tmp_path.iterdir() if path.suffix != ".csv")


def test_create_from_a_csv_of_seed_labels(tmp_path, seed_csv):
    with Project.create(tmp_path / "shoes", pool=make_pool(), labels=seed_csv) as project:
        assert project.warnings == ()
        assert project.name == "shoes" and project.folder == tmp_path / "shoes"
        status = project.status()
    assert leftovers(tmp_path) == ["shoes"]
    assert status["items"] == 8 and status["classes"] == ["cat", "dog"]
    assert status["labels_by_source"]["imported"] == 3 and status["unlabeled_items"] == 5
    assert status["labels_by_class"] == {"cat": 1, "dog": 2}
    assert (status["pool"], status["modality"], status["folder"]) == ("pool", "text", str(tmp_path / "shoes"))
    assert (status["open_questions"], status["rounds"], status["open_disagreements"]) == (0, 0, 0)

    with Project.open(tmp_path / "shoes") as project:
        labels = project.store.active_labels()
        assert [(label.uri, label.class_name, label.source) for label in labels] == [
            ("/data/pool/cats/0.txt", "cat", "imported"),
            ("/data/pool/dogs/1.txt", "dog", "imported"),
            ("/data/pool/dogs/2.txt", "dog", "imported"),
        ]
        (seed_file,) = project.store.artifacts(kind="seed-labels")
        assert seed_file.path == seed_csv.resolve() and seed_file.sha256 == path_sha256(seed_csv)


def test_create_from_an_item_label_csv_with_given_class_order(tmp_path):
    seed = write_csv(tmp_path / "seed.csv", "\ufeffItem,Label\ncats/0.txt,cat\ndogs/0.txt,dog\ncats/1.txt,cat\n")
    with Project.create(tmp_path / "p", pool=make_pool(), labels=seed, classes=["dog", "cat"], name="pets") as project:
        assert project.name == "pets"
        assert project.store.classes() == ["dog", "cat"]
        assert project.store.label_counts()["imported"] == 3


def test_create_from_the_pools_own_labels(tmp_path):
    labels = [0, UNLABELED, UNLABELED, UNLABELED, 1, UNLABELED, UNLABELED, 1]
    pool = make_pool(labels=labels, class_names=["cat", "dog"])
    with Project.create(tmp_path / "p", pool=pool) as project:
        status = project.status()
    assert status["classes"] == ["cat", "dog"] and status["labels_by_class"] == {"cat": 1, "dog": 2}


def test_create_from_a_dict_keyed_by_uri_or_pool_index(tmp_path):
    with Project.create(tmp_path / "p", pool=make_pool(), labels={0: "cat", "dogs/3.txt": "dog"}) as project:
        uris = [label.uri for label in project.store.active_labels()]
        assert uris == ["/data/pool/cats/0.txt", "/data/pool/dogs/3.txt"]


def test_duplicate_items_and_repeated_seed_labels_are_warnings(tmp_path):
    texts = [f"text {n}" for n in range(7)] + ["text 0"]
    seed = write_csv(tmp_path / "seed.csv", "uri,label\ncats/0.txt,cat\ncats/0.txt,cat\ndogs/0.txt,dog\n")
    with Project.create(tmp_path / "p", pool=make_pool(texts=texts), labels=seed) as project:
        duplicate_warning, repeat_warning = sorted(project.warnings)
        assert "1 pool items have the same content" in duplicate_warning and "dogs/3.txt" in duplicate_warning
        assert "1 seed labels repeat" in repeat_warning
        assert project.status()["duplicate_items"] == 1 and project.status()["items"] == 8


def test_an_existing_empty_folder_may_be_used(tmp_path, seed_csv):
    (tmp_path / "p").mkdir()
    with Project.create(tmp_path / "p", pool=make_pool(), labels=seed_csv) as project:
        assert project.status()["items"] == 8


BAD_INPUTS = {
    # name: (seed CSV text or None, create() keyword arguments, error, message pattern)
    "seed item not in pool": (
        "uri,label\ncats/0.txt,cat\ncats/missing.txt,dog\n",
        {},
        BadInputError,
        r"seed\.csv, row 3: item 'cats/missing.txt' is not in the pool",
    ),
    "ambiguous seed item": ("uri,label\n0.txt,cat\n", {}, BadInputError, r"row 2: item '0.txt' matches 2 pool items"),
    "unknown class": (
        "uri,label\ncats/0.txt,cat\ndogs/0.txt,cow\n",
        {"classes": ["cat", "dog"]},
        UnknownLabelError,
        r"seed\.csv, row 3, class 'cow'.*known classes: cat, dog",
    ),
    "class with no seed label": (
        "uri,label\ncats/0.txt,cat\ndogs/0.txt,dog\n",
        {"classes": ["cat", "dog", "bird"]},
        EmptyClassError,
        r"class 'bird': no seed label",
    ),
    "only one class": (
        "uri,label\ncats/0.txt,cat\n",
        {},
        BadInputError,
        r"class 'cat': the only class; labeling needs at least 2",
    ),
    "conflicting seed labels": (
        "uri,label\ncats/0.txt,cat\n/data/pool/cats/0.txt,dog\n",
        {},
        BadInputError,
        r"row 3: item '/data/pool/cats/0.txt' is labeled 'dog' here but 'cat' at row 2",
    ),
    "empty label": ("uri,label\ncats/0.txt,\n", {}, BadInputError, r"row 2: item 'cats/0.txt' has no label"),
    "bad header": (
        "path,class\ncats/0.txt,cat\n",
        {},
        BadInputError,
        r"row 1: the header must name the columns uri,label",
    ),
    "missing seed file": (
        None,
        {"labels": "nowhere.csv"},
        DataNotFoundError,
        r"nowhere\.csv: seed label file not found",
    ),
    "no labels at all": (None, {}, BadInputError, r"no classes"),
    "unlabeled pool with classes": (None, {"classes": ["cat", "dog"]}, EmptyClassError, r"class 'cat'"),
    "pool of one item": (
        None,
        {"pool": make_pool(POOL_URIS[:1], labels=[0], class_names=["cat"])},
        BadInputError,
        r"holds 1 item\(s\); a project needs at least 2",
    ),
    "duplicate uri in pool": (
        None,
        {"pool": make_pool(POOL_URIS[:2] + POOL_URIS[:1])},
        BadInputError,
        r"uri '/data/pool/cats/0.txt' twice",
    ),
    "dict key out of range": (
        None,
        {"labels": {99: "cat"}},
        BadInputError,
        r"labels\[99\]: pool index 99 is out of range",
    ),
    "pool is not a data set": (None, {"pool": ["a.txt", "b.txt"]}, BadInputError, r"pool must be a LabeledDataset"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_a_typed_error_and_leaves_nothing(tmp_path, monkeypatch, case):
    seed_text, kwargs, error, pattern = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    if seed_text is not None:
        kwargs = {"labels": write_csv(tmp_path / "seed.csv", seed_text), **kwargs}
    kwargs = {"pool": make_pool(), **kwargs}
    with pytest.raises(error, match=pattern):
        Project.create(tmp_path / "p", **kwargs)
    assert leftovers(tmp_path) == []


def test_a_failure_while_writing_leaves_nothing(tmp_path, seed_csv, monkeypatch):
    def disk_trouble(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ProjectStore, "add_label", disk_trouble)
    with pytest.raises(OSError, match="disk full"):
        Project.create(tmp_path / "p", pool=make_pool(), labels=seed_csv)
    assert leftovers(tmp_path) == []


def test_creating_over_an_existing_project_says_to_open_it(tmp_path, seed_csv):
    Project.create(tmp_path / "p", pool=make_pool(), labels=seed_csv).close()
    with pytest.raises(BadInputError, match="already lives here.*Project.open"):
        Project.create(tmp_path / "p", pool=make_pool(), labels={0: "a", 1: "b"})
    with Project.open(tmp_path / "p") as project:
        assert project.status()["labels_by_source"]["imported"] == 3  # untouched

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not an empty folder"):
        Project.create(tmp_path / "taken", pool=make_pool(), labels=seed_csv)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_opening_a_missing_project_says_to_init_one(tmp_path):
    with pytest.raises(DataNotFoundError, match="no metalabel project here.*metalabel init"):
        Project.open(tmp_path / "nowhere")


# ------------------------------------------------- class names (issue 9 item 15)


def test_control_characters_in_class_names_are_refused_where_they_were_written(tmp_path):
    seed = write_csv(tmp_path / "seed.csv", "uri,label\ncats/0.txt,ca\x00t\ndogs/1.txt,dog\n")
    with pytest.raises(BadInputError, match=r"seed.csv, row 2: .*control character.*'\\x00'"):
        Project.create(tmp_path / "p", pool=make_pool(), labels=seed)
    with pytest.raises(BadInputError, match=r"classes\[1\].*control character"):
        Project.create(tmp_path / "p", pool=make_pool(), labels={0: "cat", 5: "dog"}, classes=["cat", "dog\x1b[2J"])
    with pytest.raises(BadInputError, match=r"labels\[0\].*control character"):
        Project.create(tmp_path / "p", pool=make_pool(), labels={0: "c\nat", 5: "dog"})
    assert leftovers(tmp_path) == []
    with ProjectStore.create(tmp_path / "store", name="s") as store:
        with pytest.raises(BadInputError, match="control character"):
            store.set_classes(["a", "b\x00"])
        assert store.classes() == []


def test_a_case_variant_class_in_the_seed_labels_is_a_warning(tmp_path):
    seed = write_csv(tmp_path / "seed.csv", "uri,label\ncats/0.txt,A\ncats/1.txt,a\ndogs/1.txt,dog\n")
    with Project.create(tmp_path / "p", pool=make_pool(), labels=seed) as project:
        assert project.store.classes() == ["A", "a", "dog"]  # kept as written
        [warning] = project.warnings
        assert "'A', 'a'" in warning and "differ only in case" in warning



def test_items_skipped_while_reading_are_a_warning_naming_the_first_row_and_why(tmp_path):
    from metalabel import datasets

    pool_file = write_csv(tmp_path / "posts.csv", "text,label\ngreat,pos\n,neg\nbad,neg\nok,\n")
    with Project.create(tmp_path / "p", pool=datasets.read_text(pool_file, on_error="skip")) as project:
        [warning] = project.warnings
        assert warning.startswith(f"1 items were skipped while reading the pool (first: {pool_file}:3: has no text")


# ------------------------------------------- seed labels read by the data readers' CSV reader (issue 12)


def test_seed_csv_that_is_not_utf8_keeps_its_error(tmp_path):
    seed = tmp_path / "seed.csv"
    seed.write_bytes(b"uri,label\ncats/0.txt,caf\xe9\n")
    with pytest.raises(BadInputError, match=r"seed\.csv: not UTF-8 text \(invalid continuation byte\).*save the CSV"):
        Project.create(tmp_path / "p", pool=make_pool(), labels=seed)
    assert leftovers(tmp_path) == []


def test_seed_csv_row_spanning_lines_is_named_by_the_line_it_starts_on(tmp_path):
    # the data readers' convention; the seed reader once named the line the row ended on (row 4 here)
    seed = write_csv(tmp_path / "seed.csv", 'uri,label\ncats/0.txt,cat\ndogs/0.txt,"do\ng"\n')
    limit = csv.field_size_limit()
    with pytest.raises(BadInputError, match=r"seed\.csv, row 3: .*control character"):
        Project.create(tmp_path / "p", pool=make_pool(), labels=seed)
    assert csv.field_size_limit() == limit  # the reader's larger cell limit is given back on an error too


# ------------------------------------------- the pool check (issue 12), growth (issue 9 item 12)


class CountingUris(list):
    """A uri list that counts how often it is walked through."""

    walks = 0

    def __iter__(self):
        CountingUris.walks += 1
        return super().__iter__()


def test_the_pool_check_is_linear_and_hashes_each_stored_item_once(tmp_path, monkeypatch):
    count = 3000
    uris = [f"/data/pool/{n}.txt" for n in range(count)]
    pool = make_pool(uris, labels=[0, 1] + [UNLABELED] * (count - 2), class_names=("a", "b"))
    Project.create(tmp_path / "p", pool=pool).close()

    import metalabel.store.pool as pool_module

    hashed = []
    real_hash = pool_module.content_hash
    monkeypatch.setattr(pool_module, "content_hash", lambda item: hashed.append(item) or real_hash(item))
    CountingUris.walks = 0
    counting = LabeledDataset("pool", "text", pool.items, pool.labels, pool.class_names, CountingUris(uris))
    with Project.open(tmp_path / "p", pool=counting) as project:
        assert project.load_pool() is counting
    # Before: a set of the pool's uris was built once per stored item (3000 walks, quadratic time).
    assert CountingUris.walks <= 2
    assert len(hashed) == count


def test_a_changed_or_missing_pool_item_is_a_pool_changed_error_naming_it(tmp_path):
    from metalabel.errors import PoolChangedError

    Project.create(tmp_path / "p", pool=make_pool(labels=[0, 1] + [UNLABELED] * 6, class_names=("a", "b"))).close()
    texts = [f"text of {uri}" for uri in POOL_URIS]
    texts[3] = "edited"
    with pytest.raises(PoolChangedError, match=f"{POOL_URIS[3]}.*changed since init"):
        Project.open(tmp_path / "p", pool=make_pool(texts=texts))
    with pytest.raises(PoolChangedError, match=f"1 items .*not in the pool any more.*{POOL_URIS[-1]}"):
        Project.open(tmp_path / "p", pool=make_pool(POOL_URIS[:-1]))


def test_items_the_pool_gained_after_init_are_added_hashed_once_and_unlabeled(tmp_path):
    from metalabel.store import content_hash

    pool_file = tmp_path / "pool.csv"
    pool_file.write_text("text,label\nyes,a\nno,b\nmaybe,\n", encoding="utf-8")
    from metalabel import datasets

    Project.create(tmp_path / "p", pool=datasets.read_text(pool_file)).close()
    with pool_file.open("a", encoding="utf-8") as file:
        file.write("perhaps,\nnever,\n")
    with Project.open(tmp_path / "p") as project:
        added = project.add_new_items()
        grown = project.load_pool()
        assert [item.uri for item in added] == grown.uris[3:]
        assert [item.content_hash for item in added] == [content_hash("perhaps"), content_hash("never")]
        assert {item.split for item in added} == {"pool"} and {item.modality for item in added} == {"text"}
        assert project.status()["items"] == 5 and project.status()["labeled_items"] == 2
        assert project.add_new_items() == []  # nothing new the second time
