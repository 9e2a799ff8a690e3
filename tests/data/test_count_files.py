"""Count files: AnnData ``.h5ad`` (sparse, dense, layers) and CSV/TSV/Parquet tables."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from support import package_warnings

from pyro_vae.data.datasets import DataError
from pyro_vae.data.sources import anndata_file
from pyro_vae.data.sources.anndata_file import CsrRows, SparseRows, open_h5ad
from pyro_vae.data.sources.rows import ArrayRows
from pyro_vae.data.sources.source import gather, open_source
from pyro_vae.data.sources.tables import open_table

anndata = pytest.importorskip("anndata")

ORDERS = [[3, 0, 3], [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [7], [0, 11, 5, 5, 6], []]


def _counts(n: int = 12, d: int = 5, seed: int = 0) -> np.ndarray:
    """Counts with empty rows and columns, and values past 255."""
    x = np.random.default_rng(seed).poisson(1.0, size=(n, d)).astype(np.float32)
    x[2] = 0  # a row with no stored values
    x[:, 1] = 0  # a column with none
    x[5, 4] = 300
    return x


def _write_h5ad(path, x, *, layer=None, sparse="csr", var_names=None):
    make = {"csr": scipy.sparse.csr_matrix, "csc": scipy.sparse.csc_matrix, "dense": np.asarray}
    var = pd.DataFrame(index=var_names or [f"gene{j}" for j in range(x.shape[1])])
    adata = anndata.AnnData(X=make[sparse](x), var=var)
    if layer is not None:
        adata.layers["counts"] = make[sparse](layer)
    adata.write_h5ad(path)
    return path


# --- h5ad ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [0, 1 << 14])  # one read per row, or runs of rows merged
def test_h5ad_sparse_rows_read_in_any_order(tmp_path, monkeypatch, gap):
    monkeypatch.setattr(anndata_file, "GAP", gap)
    x = _counts()
    source = open_h5ad(_write_h5ad(tmp_path / "a.h5ad", x, layer=3 * x))
    assert source.format == "h5ad" and source.values == "counts"
    assert source.shape == (5,) and len(source.train) == 12
    assert source.train.dtype == np.float32  # stored as written: float32 counts
    for order in ORDERS:
        got = source.train.read(np.array(order, dtype=np.int64))
        assert got.shape == (len(order), 5) and got.dtype == np.float32
        np.testing.assert_array_equal(got, x[order])
    layer = open_h5ad(tmp_path / "a.h5ad", data_key="counts")
    np.testing.assert_array_equal(layer.train.read(np.array([3, 0, 3])), 3 * x[[3, 0, 3]])
    assert layer.facts["layer"] == "counts" and source.facts["layer"] == "X"
    np.testing.assert_array_equal(gather(layer.train, None).numpy(), 3 * x)


class _Reads:
    """A stored array that records the slices read from it."""

    def __init__(self, array, log):
        self.array, self.log = array, log

    def __getitem__(self, span):
        self.log.append((span.start, span.stop))
        return self.array[span]


@pytest.mark.parametrize("gap, spans", [(0, [(0, 9), (12, 15), (21, 24)]), (1 << 14, [(0, 24)])])
def test_h5ad_batch_reads_one_span_per_run_of_rows(tmp_path, monkeypatch, gap, spans):
    monkeypatch.setattr(anndata_file, "GAP", gap)
    x = np.arange(1, 41, dtype=np.float32).reshape(10, 4)
    x[:, 2] = 0  # three stored values a row
    x[4] = 0  # and none in row 4
    rows = open_h5ad(_write_h5ad(tmp_path / "a.h5ad", x)).train
    assert rows.indptr.tolist() == [0, 3, 6, 9, 12, 12, 15, 18, 21, 24, 27]
    log = []
    group = {k: _Reads(v[()], log) for k, v in rows.node.get().items()}
    rows.node.get = lambda: group
    order = np.array([8, 0, 2, 4, 5, 1, 8])  # rows 0-2 and 4-5 are runs (row 4 is empty)
    np.testing.assert_array_equal(rows.read(order), x[order])
    assert log == [*spans, *spans]  # data, then indices


def test_h5ad_sparse_stays_sparse_and_pickles(tmp_path):
    x = _counts()
    source = open_h5ad(_write_h5ad(tmp_path / "a.h5ad", x))
    rows = source.train
    assert isinstance(rows, CsrRows) and source.facts["sparse"] is True
    held = [v for v in vars(rows).values() if isinstance(v, np.ndarray)]
    assert [a.shape for a in held] == [(13,)]  # the row pointers, nothing dense
    rows.read(np.array([1, 2]))  # opens the file in this process
    copy = pickle.loads(pickle.dumps(rows))
    assert copy.node._file is None  # no open handle travelled
    np.testing.assert_array_equal(copy.read(np.array([3, 0, 3])), x[[3, 0, 3]])
    np.testing.assert_array_equal(rows.read(np.array([5])), [[x[5, 0], 0, x[5, 2], x[5, 3], 300]])


def _read_in_child(rows, queue) -> None:
    queue.put((rows.read(np.array([5, 1])), rows.node._pid == os.getpid()))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_h5ad_rows_reopen_in_a_forked_worker(tmp_path):
    x = _counts()
    rows = open_h5ad(_write_h5ad(tmp_path / "a.h5ad", x)).train
    rows.read(np.array([0]))  # the parent's handle, inherited by the child
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(rows, queue))
    child.start()
    got, reopened = queue.get(timeout=60)
    child.join(timeout=60)
    np.testing.assert_array_equal(got, x[[5, 1]])
    assert reopened  # the child opened the file itself
    np.testing.assert_array_equal(rows.read(np.array([1])), x[[1]])


def test_h5ad_csc_is_converted_to_csr_in_memory(tmp_path):
    x = _counts()
    source = open_h5ad(_write_h5ad(tmp_path / "c.h5ad", x, sparse="csc"))
    assert isinstance(source.train, SparseRows)
    assert scipy.sparse.issparse(source.train.matrix) and source.train.matrix.format == "csr"
    assert source.facts["sparse"] is True
    copy = pickle.loads(pickle.dumps(source.train))
    for order in ORDERS:
        np.testing.assert_array_equal(copy.read(np.array(order, dtype=np.int64)), x[order])


def test_h5ad_dense_x_is_read_by_rows(tmp_path):
    x = _counts()
    source = open_h5ad(_write_h5ad(tmp_path / "d.h5ad", x, sparse="dense"))
    assert isinstance(source.train, ArrayRows) and source.facts["sparse"] is False
    assert isinstance(source.train.array, anndata_file.H5Dense)  # the file, not its values
    copy = pickle.loads(pickle.dumps(source.train))
    for order in ORDERS:
        np.testing.assert_array_equal(copy.read(np.array(order, dtype=np.int64)), x[order])


def test_h5ad_facts_hash_the_var_names(tmp_path):
    names = ["Actb", "Gapdh", "Cd3e", "Ms4a1", "Lyz2"]
    path = _write_h5ad(tmp_path / "a.h5ad", _counts(), var_names=names)
    facts = open_h5ad(path).facts
    assert facts == {
        "layer": "X",
        "n_vars": 5,
        "sparse": True,
        "var_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
    }
    other = _write_h5ad(tmp_path / "b.h5ad", _counts(), var_names=names[::-1])
    assert open_h5ad(other).facts["var_names_sha256"] != facts["var_names_sha256"]


def test_h5ad_unknown_layer_lists_the_layers(tmp_path):
    path = _write_h5ad(tmp_path / "a.h5ad", _counts(), layer=_counts())
    with pytest.raises(DataError, match=r"no layer 'raw'; its layers: counts \(") as err:
        open_h5ad(path, data_key="raw")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("sparse", ["csr", "csc", "dense"])
@pytest.mark.parametrize("bad", [1.5, -2.0, np.nan, np.inf])
def test_h5ad_value_that_is_not_a_count_is_named(tmp_path, sparse, bad):
    x = _counts()
    x[7, 3], x[9, 0] = bad, bad
    path = _write_h5ad(tmp_path / "a.h5ad", x, sparse=sparse)
    with pytest.raises(DataError, match=r"row 8, column 4 holds") as err:
        open_h5ad(path)
    assert "a.h5ad" in str(err.value)
    with package_warnings() as caught:
        source = open_h5ad(path, skip_bad=True)
    assert len(caught) == 1 and "skipped 2 rows" in caught[0], caught
    assert source.facts["skipped"] == 2 and len(source.train) == 10
    keep = [i for i in range(12) if i not in (7, 9)]
    np.testing.assert_array_equal(source.train.all_rows(), x[keep])
    np.testing.assert_array_equal(source.train.read(np.array([7, 0])), x[[keep[7], 0]])


def test_files_that_are_not_anndata_are_named(tmp_path):
    import h5py

    text = tmp_path / "notes.h5ad"
    text.write_text("cell,gene\n")
    with pytest.raises(DataError, match=r"'.*notes\.h5ad' is not an HDF5 file"):
        open_h5ad(text)
    plain = tmp_path / "plain.h5ad"
    with h5py.File(plain, "w") as f:
        f["data"] = np.zeros((3, 2))
    with pytest.raises(DataError, match=r"'.*plain\.h5ad' is HDF5 but not AnnData"):
        open_h5ad(plain)


def test_open_source_picks_the_h5ad_reader(tmp_path):
    x = _counts()
    source = open_source(_write_h5ad(tmp_path / "a.h5ad", x, layer=2 * x), data_key="counts")
    assert source.format == "h5ad" and source.facts["layer"] == "counts"
    assert source.fingerprint["bytes"] > 0
    np.testing.assert_array_equal(source.train.read(np.array([5])), 2 * x[[5]])


# --- tables ----------------------------------------------------------------------------------


def _frame(x: np.ndarray) -> pd.DataFrame:
    cells = pd.Index([f"cell{i}" for i in range(len(x))], name="barcode")
    return pd.DataFrame(
        x.astype(np.int64), columns=[f"g{j}" for j in range(x.shape[1])], index=cells
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet"])
def test_table_with_ids_and_header_round_trips(tmp_path, suffix):
    x = _counts()
    path = tmp_path / f"t{suffix}"
    frame = _frame(x)
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",")
    source = open_table(path)
    assert source.format == "table" and source.values == "counts" and source.shape == (5,)
    assert source.train.dtype == np.uint16  # 300 needs two bytes
    assert source.train_labels is None
    assert source.facts == {
        "header": True,
        "columns": ["g0", "g1", "g2", "g3", "g4"],
        "id_column": "barcode",
    }
    for order in ORDERS:
        np.testing.assert_array_equal(source.train.read(np.array(order, dtype=np.int64)), x[order])


def test_headerless_tables_and_compact_types(tmp_path):
    x = _counts()[:, [0, 2, 3]]  # without column 4 and its 300
    x[5] = [7, 0, 255]
    np.savetxt(tmp_path / "w.txt", x, fmt="%d")  # whitespace, no header, no ids
    source = open_table(tmp_path / "w.txt")
    assert source.train.dtype == np.uint8
    assert source.facts == {"header": False, "columns": [1, 2, 3], "id_column": None}
    np.testing.assert_array_equal(source.train.read(np.array([3, 0, 3])), x[[3, 0, 3]])
    ids = tmp_path / "ids.csv"  # ids in the first column, no header, floats that are whole
    ids.write_text(
        "".join(f"c{i}," + ",".join(f"{v:.1f}" for v in r) + "\n" for i, r in enumerate(x))
    )
    source = open_table(ids)
    assert source.facts == {"header": False, "columns": [2, 3, 4], "id_column": "column 1"}
    np.testing.assert_array_equal(source.train.all_rows(), x)


def test_pandas_numbered_columns_are_a_header(tmp_path):
    x = _counts()
    pd.DataFrame(x.astype(int)).to_csv(tmp_path / "n.csv", index=False)  # header 0,1,2,3,4
    pd.DataFrame(x.astype(int)).to_csv(tmp_path / "i.csv")  # header ,0,1,2,3,4
    for name, id_column in [("n.csv", None), ("i.csv", "column 1")]:
        source = open_table(tmp_path / name)
        assert source.facts["columns"] == ["0", "1", "2", "3", "4"]
        assert source.facts["id_column"] == id_column
        np.testing.assert_array_equal(source.train.all_rows(), x)


def test_label_column_becomes_sorted_classes(tmp_path):
    x = _counts()
    kinds = ["T", "B", "NK", "B", "T", "T", "B", "NK", "T", "B", "B", "T"]
    stages = [10, 2, 2, 10, 1, 1, 2, 2, 10, 1, 1, 2]
    _frame(x).assign(kind=kinds, stage=stages).to_csv(tmp_path / "l.csv")
    source = open_table(tmp_path / "l.csv", data_key="kind")
    assert source.facts["classes"] == ["B", "NK", "T"] and source.facts["label_column"] == "kind"
    assert source.train_labels.tolist() == [2, 0, 1, 0, 2, 2, 0, 1, 2, 0, 0, 2]
    assert source.facts["columns"] == ["g0", "g1", "g2", "g3", "g4", "stage"]
    np.testing.assert_array_equal(source.train.all_rows(), np.column_stack([x, stages]))
    # with "stage" as the labels, "kind" is a column of words where counts belong
    with pytest.raises(DataError, match=r"row 2, column 7 \('kind'\) holds 'T'") as err:
        open_table(tmp_path / "l.csv", data_key="stage")
    assert str(err.value).endswith("(a column of text: if it holds labels, pass --data-key kind)")
    # a column of labels with no name in the header: name it
    unnamed = _frame(x).assign(**{"": kinds})
    unnamed.to_csv(tmp_path / "u.csv")
    with pytest.raises(DataError, match="give it a name in the header row") as err:
        open_table(tmp_path / "u.csv")
    assert "--skip-bad" not in str(err.value)
    _frame(x).assign(stage=stages).to_parquet(tmp_path / "s.parquet")
    staged = open_table(tmp_path / "s.parquet", data_key="stage")
    assert staged.facts["classes"] == ["1", "2", "10"]  # sorted as numbers
    assert staged.train_labels.tolist() == [2, 1, 1, 2, 0, 0, 1, 1, 2, 0, 0, 1]
    np.testing.assert_array_equal(staged.train.all_rows(), x)
    with pytest.raises(DataError, match=r"no column 'type'; its columns: barcode, g0"):
        open_table(tmp_path / "l.csv", data_key="type")


@pytest.mark.parametrize(
    "cell, shown",
    [
        ("x", "holds 'x'"),
        ("-3", "holds -3"),
        ("2.5", "holds 2.5"),
        ("", "is empty"),
        ("1e20", "holds 1e+20"),
    ],
)
def test_table_cell_that_is_not_a_count_is_named(tmp_path, cell, shown):
    x = _counts()
    frame = _frame(x).astype(object)
    frame.iloc[6, 2], frame.iloc[10, 4] = cell, cell
    frame.to_csv(tmp_path / "t.csv")
    with pytest.raises(DataError) as err:
        open_table(tmp_path / "t.csv")
    # data row 7 is the file's row 8 (the header is row 1); g2 is its column 4 (ids first)
    assert f"row 8, column 4 ('g2') {shown}" in str(err.value) and "t.csv" in str(err.value)
    with package_warnings() as caught:
        source = open_table(tmp_path / "t.csv", skip_bad=True)
    assert len(caught) == 1 and "skipped 2 rows" in caught[0], caught
    assert source.facts["skipped"] == 2
    np.testing.assert_array_equal(source.train.all_rows(), np.delete(x, [6, 10], axis=0))


def test_row_without_a_label_is_named(tmp_path):
    x = _counts()
    kinds = ["T", "B", "NK", "B", "", "T", "B", "NK", "T", "B", "B", "T"]
    _frame(x).assign(kind=kinds).to_csv(tmp_path / "l.csv")
    with pytest.raises(DataError, match=r"row 6 has no label in column 7 \('kind'\)"):
        open_table(tmp_path / "l.csv", data_key="kind")
    with package_warnings() as caught:
        source = open_table(tmp_path / "l.csv", data_key="kind", skip_bad=True)
    assert len(caught) == 1 and "skipped 1 rows" in caught[0], caught
    assert source.facts["skipped"] == 1 and source.facts["classes"] == ["B", "NK", "T"]
    assert source.train_labels.tolist() == [2, 0, 1, 0, 2, 0, 1, 2, 0, 0, 2]
    np.testing.assert_array_equal(source.train.all_rows(), np.delete(x, 4, axis=0))


def test_parquet_rows_are_numbered_from_one(tmp_path):
    frame = _frame(_counts()).astype(float)
    frame.iloc[4, 0] = 0.5
    frame.to_parquet(tmp_path / "t.pq")
    with pytest.raises(DataError, match=r"row 5, column 1 \('g0'\) holds 0.5"):
        open_table(tmp_path / "t.pq")
