"""Model files: round trips with bit-identical outputs, atomic writes, and clear errors for bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

import minicompress as mc
from minicompress import io, nn


def _model():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1)
    model.train()
    with mc.no_grad():
        model(mc.rand(8, 1, 8, 8))  # move the batch-norm statistics away from their defaults
    return model.eval()


def test_float_model_round_trips_bit_identical(tmp_path):
    model = _model()
    path = tmp_path / "model.npz"
    io.save(model, path)
    loaded = io.load(path)
    x = mc.rand(4, 1, 8, 8)
    with mc.no_grad():
        np.testing.assert_array_equal(model(x).data, loaded(x).data)
    assert type(loaded) is type(model)
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert not loaded.training


def test_file_is_plain_data_read_without_pickle(tmp_path):
    path = tmp_path / "model.npz"
    io.save(_model(), path)
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(bytes(archive["__format__.json"]).decode())
        assert header["format"] == "minicompress" and header["version"] == io.FORMAT_VERSION
        assert all(archive[k].dtype != object for k in archive.files)


def test_failed_save_leaves_old_file_intact(tmp_path):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(2, 2), path)
    before = path.read_bytes()

    class NotALayer(nn.Module):  # defined outside minicompress: refused
        def forward(self, x):
            return x
    with pytest.raises(TypeError, match="not a minicompress layer"):
        io.save(nn.Sequential(nn.Linear(2, 2), NotALayer()), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    io.save(_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ModelFileError, match="truncated or corrupted"):
        io.load(path)


def test_corrupted_array_is_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(64, 64), path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(io.ModelFileError):
        io.load(path)


def _rewrite_header(path, edit):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(bytes(arrays["__format__.json"]).decode())
    edit(header)
    arrays["__format__.json"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(version=99), "format version 99"),
    (lambda h: h["model"].update({"class": "os.system"}), "unknown layer type"),
    (lambda h: h["model"]["parameters"]["weight"].update(array="a999"), "missing"),
    (lambda h: h.update(format="other"), "not a minicompress model file"),
])
def test_tampered_header_is_refused(tmp_path, edit, message):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(3, 2), path)
    _rewrite_header(path, edit)
    with pytest.raises(io.ModelFileError, match=message):
        io.load(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(io.ModelFileError, match="not a minicompress model file"):
        io.load(path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(io.ModelFileError):
        io.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.npz")


def _assert_same_outputs(model, loaded, shape=(4, 1, 8, 8)):
    x = mc.tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    with mc.no_grad():
        np.testing.assert_array_equal(model(x).data, loaded(x).data)


def test_pruned_masked_and_sparse_models_round_trip(tmp_path):
    from minicompress import prune
    model = _model()
    prune.ln_structured(model.stem[0], "weight", amount=0.3, n=2, dim=0)
    prune.l1_unstructured(model.classifier, "weight", amount=0.5)
    io.save(model, tmp_path / "masked.npz")
    loaded = io.load(tmp_path / "masked.npz")
    _assert_same_outputs(model, loaded)
    assert prune.is_pruned(loaded) and "weight_orig" in dict(loaded.classifier.named_parameters())
    prune.strip_pruning(model)
    sparse = prune.to_sparse(model, min_sparsity=0.4)
    io.save(sparse, tmp_path / "sparse.npz")
    _assert_same_outputs(sparse, io.load(tmp_path / "sparse.npz"))


def test_quantized_model_round_trips(tmp_path):
    import itertools
    from minicompress.quant.static import quantize_static
    from minicompress.training import digits_loaders
    train, _ = digits_loaders()
    quantized = quantize_static(_model(), itertools.islice(train, 2))
    io.save(quantized, tmp_path / "int8.npz")
    _assert_same_outputs(quantized, io.load(tmp_path / "int8.npz"))


# ----- crafted files: each a ModelFileError with a clear message, before anything is allocated ----

def _write_raw(path, header_text, arrays=None):
    """A model file with `header_text` as its header verbatim (np.savez writes each array as .npy)."""
    np.savez(path, **{"__format__.json": np.frombuffer(header_text.encode(), dtype=np.uint8)}, **(arrays or {}))


def test_deeply_nested_header_is_refused(tmp_path):
    path = tmp_path / "deep.npz"
    _write_raw(path, '{"format": "minicompress", "version": 1, "model": ' + "[" * 2000 + "]" * 2000 + "}")
    with pytest.raises(io.ModelFileError, match="nests 2001 levels deep"):
        io.load(path)


def test_array_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(3, 2), path)
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    name = next(n for n in members if n != "__format__.json.npy")
    members[name] = members[name].replace(b"(2, 3)", b"(1099511627776,)".ljust(6))  # 2^40 float32
    with zipfile.ZipFile(path, "w") as z:
        for key, data in members.items():
            z.writestr(key, data)
    with pytest.raises(io.ModelFileError, match=r"claims shape \(1099511627776,\)"):
        io.load(path)


@pytest.mark.parametrize("version", [-7, 0, True, 1.0, "1", None])
def test_version_must_be_a_positive_int(tmp_path, version):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(3, 2), path)
    _rewrite_header(path, lambda h: h.update(version=version))
    with pytest.raises(io.ModelFileError, match="expected a positive integer"):
        io.load(path)


@pytest.mark.parametrize("layer, key, value", [
    (lambda: nn.Linear(3, 2), "in_features", 4),
    (lambda: nn.Conv2d(2, 4, 3), "out_channels", 5),
    (lambda: nn.BatchNorm2d(3), "num_features", 2),
    (lambda: nn.LSTM(3, 2), "input_size", 5),
])
def test_sizes_that_disagree_with_the_weights_are_refused(tmp_path, layer, key, value):
    path = tmp_path / "model.npz"
    io.save(layer(), path)
    _rewrite_header(path, lambda h: h["model"]["attributes"].update({key: value}))
    with pytest.raises(io.ModelFileError, match="shape"):
        io.load(path)


@pytest.mark.parametrize("key, value, message", [
    ("in_features", 100, "packed must be a uint8 array of shape"),
    ("out_features", 2, "packed must be a uint8 array of shape"),
    ("group_size", 32, "packed must be a uint8 array of shape"),
    ("group_size", 24, "group_size must be a power of two"),
    ("symmetric", True, "weight_zero_points is present"),
    ("in_features", "40", "in_features as a positive int"),
])
def test_int4_sizes_that_disagree_with_the_packed_weight_are_refused(tmp_path, key, value, message):
    from minicompress.quant.weight_only import Int4Linear
    path = tmp_path / "model.npz"
    io.save(Int4Linear.from_float(nn.Linear(40, 3), 16, symmetric=False), path)
    _rewrite_header(path, lambda h: h["model"]["attributes"].update({key: value}))
    with pytest.raises(io.ModelFileError, match=message):
        io.load(path)


def test_int4_layer_round_trips_bit_for_bit(tmp_path):
    from minicompress.quant.weight_only import Int4Linear
    for symmetric in (True, False):
        layer = Int4Linear.from_float(nn.Linear(40, 3), 16, symmetric=symmetric)
        io.save(layer, tmp_path / "int4.npz")
        loaded = io.load(tmp_path / "int4.npz")
        assert set(layer._buffers) == set(loaded._buffers)
        assert (loaded.weight_zero_points is None) == symmetric
        for name, buffer in layer._buffers.items():
            if buffer is None:
                assert loaded._buffers[name] is None
                continue
            assert buffer.data.dtype == loaded._buffers[name].data.dtype
            assert buffer.data.tobytes() == loaded._buffers[name].data.tobytes()
        x = mc.tensor(np.random.default_rng(0).standard_normal((5, 40)).astype(np.float32))
        assert layer(x).data.tobytes() == loaded(x).data.tobytes()


def test_a_npy_file_is_not_a_model_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(io.ModelFileError, match="a single .npy array"):
        io.load(tmp_path / "x.npy")


def test_version_1_files_still_load(tmp_path):
    path = tmp_path / "model.npz"
    model = nn.Linear(3, 2)
    io.save(model, path)
    _rewrite_header(path, lambda h: [h.update(version=1), h.pop("metadata"), h["model"].pop("forward_hooks")])
    _assert_same_outputs(model, io.load(path), shape=(4, 3))


# ----- metadata --------------------------------------------------------------------------------

def test_metadata_is_kept_with_the_model(tmp_path):
    path = tmp_path / "model.npz"
    metadata = {"input": {"shape": [1, 8, 8], "scale": 0.0625}, "note": "digits"}
    io.save(nn.Linear(3, 2), path, metadata=metadata)
    assert io.load_metadata(path) == metadata
    io.save(nn.Linear(3, 2), path)
    assert io.load_metadata(path) == {}
    with pytest.raises(TypeError, match="JSON"):
        io.save(nn.Linear(3, 2), path, metadata={"x": np.zeros(2)})


# ----- save: paths, modes, links, interruptions ------------------------------------------------

def test_save_into_a_missing_folder_names_the_users_path(tmp_path):
    path = tmp_path / "missing" / "model.npz"
    with pytest.raises(FileNotFoundError, match="missing/model.npz"):
        io.save(nn.Linear(2, 2), path)


def test_new_files_get_the_umask_mode_and_existing_files_keep_theirs(tmp_path):
    previous = os.umask(0o027)
    try:
        io.save(nn.Linear(2, 2), tmp_path / "new.npz")
        assert os.stat(tmp_path / "new.npz").st_mode & 0o777 == 0o640
        (tmp_path / "old.npz").write_bytes(b"")
        os.chmod(tmp_path / "old.npz", 0o604)
        io.save(nn.Linear(2, 2), tmp_path / "old.npz")
        assert os.stat(tmp_path / "old.npz").st_mode & 0o777 == 0o604
    finally:
        os.umask(previous)


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.npz"
    io.save(nn.Linear(2, 2), target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model = nn.Linear(2, 3)
    io.save(model, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert io.load(target).out_features == 3
    assert sorted(os.listdir(tmp_path / "real")) == ["model.npz"] and sorted(os.listdir(tmp_path)) == ["link.npz", "real"]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("disk full")])
def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch, error):
    path = tmp_path / "model.npz"
    io.save(nn.Linear(2, 2), path)
    before = path.read_bytes()

    def fail(f, **arrays):
        f.write(b"partial")
        raise error
    monkeypatch.setattr(io.np, "savez", fail)
    with pytest.raises(type(error)):
        io.save(nn.Linear(2, 2), path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"] and path.read_bytes() == before
