"""Atomic checkpoints, weights_only loading with clear errors, and exact RNG restoration."""
import collections
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_robot.run import checkpoint as ckpt
from calql_robot.run.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_weights_only_safe,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_run_checkpoint,
    step_checkpoints,
)


def _model_and_optimizer_state() -> dict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {"net": net.state_dict(), "opt": opt.state_dict(), "step": 7, "log_alpha": torch.tensor(0.3)}


def test_round_trip_of_model_optimizer_and_counters(tmp_path: Path) -> None:
    state = _model_and_optimizer_state()
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 7
    for k, v in state["net"].items():
        torch.testing.assert_close(loaded["net"][k], v)
    assert loaded["opt"]["param_groups"] == state["opt"]["param_groups"]
    torch.testing.assert_close(loaded["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_every_allowed_leaf_type_loads_weights_only(tmp_path: Path) -> None:
    """The save-time allow-list must not promise more than torch's loader accepts."""
    state = {
        "tensor": torch.zeros(3, dtype=torch.uint32), "bool": True, "int": 2**127 + 1, "float": float("nan"),
        "complex": 1 + 2j, "str": "s", "bytes": b"b", "none": None, "device": torch.device("cpu"),
        "dtype": torch.float16, "size": torch.Size([2, 3]), "list": [1, (2, 3)], "set": {1, 2},
        "od": collections.OrderedDict(a=1), 5: "int key", "param": torch.nn.Parameter(torch.ones(2)),
    }
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["int"] == 2**127 + 1 and loaded[5] == "int key" and loaded["size"] == torch.Size([2, 3])
    assert loaded["set"] == {1, 2} and loaded["dtype"] is torch.float16 and loaded["bytes"] == b"b"


@pytest.mark.parametrize(
    ("bad", "where"),
    [({"buf": {"obs": np.zeros(3)}}, r"state\['buf'\]\['obs'\].*numpy"), ({"x": [1, np.float32(1)]}, r"state\['x'\]\[1\]"),
     ({"f": lambda: 0}, r"state\['f'\]"), ({"s": slice(1, 2)}, r"state\['s'\]")],
)
def test_unsafe_values_are_refused_at_save_time_naming_the_key(tmp_path: Path, bad: dict, where: str) -> None:
    with pytest.raises(TypeError, match=where):
        save_checkpoint(tmp_path / "c.pt", bad)
    assert not (tmp_path / "c.pt").exists()


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})

    def crash(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_keep_last_prunes_numbered_copies_and_latest_is_newest(tmp_path: Path) -> None:
    for step in (100, 200, 300, 400):
        latest = save_run_checkpoint(tmp_path, {"step": step, "w": torch.full((2,), float(step))}, step, keep_last=2)
    assert [s for s, _ in step_checkpoints(tmp_path)] == [300, 400]
    assert latest == tmp_path / "latest.pt" == latest_checkpoint(tmp_path)
    assert load_checkpoint(latest)["step"] == 400
    # latest.pt is replaced, not written through: the old numbered file keeps its content.
    save_run_checkpoint(tmp_path, {"step": 500}, 500, keep_last=2)
    assert load_checkpoint(tmp_path / "step_000000400.pt")["step"] == 400
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 500


def test_keep_last_zero_writes_only_latest(tmp_path: Path) -> None:
    save_run_checkpoint(tmp_path, {"step": 1}, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    assert latest_checkpoint(tmp_path / "none") is None
    with pytest.raises(ValueError, match="keep_last"):
        save_run_checkpoint(tmp_path, {"step": 1}, 1, keep_last=-1)


def test_missing_truncated_and_foreign_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "ok.pt", {"w": torch.zeros(1000)})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello world")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    damaged = bytearray(data)
    damaged[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64  # inside the (zero) tensor bytes
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    for name, match in (("trunc.pt", "truncated PyTorch checkpoint"), ("text.pt", "not a PyTorch checkpoint"),
                        ("random.pt", "not a PyTorch checkpoint"), ("empty.pt", "empty file"),
                        ("damaged.pt", "damaged PyTorch checkpoint.*CRC")):
        with pytest.raises(CheckpointError, match=rf"{name}: {match}"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")


class _Evil:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch_numpy", "pickle_evil"])
def test_disallowed_pickles_are_refused_not_executed(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "bad.pt"
    if writer == "torch_numpy":
        torch.save({"obs": np.zeros(3)}, path)
    else:
        path.write_bytes(pickle.dumps({"x": _Evil(tmp_path / "pwned")}, protocol=2))
    with pytest.raises(CheckpointError, match="bad.pt: refusing to load.*will not unpickle untrusted data") as info:
        load_checkpoint(path)
    assert "weights_only` set to `False`" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def _draw_all(np_rng: np.random.Generator) -> tuple:
    return random.random(), np.random.rand(), np_rng.random(3).tolist(), torch.rand(2).tolist()


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_rng_state_restores_every_stream_through_a_weights_only_file(tmp_path: Path, bit_generator: type) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np_rng = np.random.Generator(bit_generator(4))
    _draw_all(np_rng)
    np.random.randn()  # leaves a cached gaussian in the legacy global state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state(np_rng)})
    expected = _draw_all(np_rng)
    _draw_all(np_rng)  # advance everything further
    fresh = np.random.Generator(bit_generator(99))
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"], fresh)
    assert _draw_all(fresh) == expected


def test_pcg64_128_bit_ints_survive_weights_only(tmp_path: Path) -> None:
    np_rng = np.random.default_rng(12345)
    saved = capture_rng_state(np_rng)["numpy_generator"]
    assert saved["state"]["state"] >= 2**64  # really a 128-bit Python int
    torch.save(saved, tmp_path / "g.pt")
    assert torch.load(tmp_path / "g.pt", weights_only=True) == np_rng.bit_generator.state


def test_legacy_gaussian_cache_is_restored() -> None:
    np.random.seed(5)
    np.random.randn()  # has_gauss = 1 now
    state = capture_rng_state(None)
    expected = np.random.randn(4).tolist()
    np.random.seed(0)
    restore_rng_state(state, None)
    assert np.random.randn(4).tolist() == expected


def test_rng_restore_checks_generator_agreement() -> None:
    state = capture_rng_state(np.random.default_rng(0))
    with pytest.raises(ValueError, match="disagree"):
        restore_rng_state(state, None)
    with pytest.raises(ValueError, match="PCG64.*MT19937"):
        restore_rng_state(state, np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(KeyError, match="torch_cpu"):
        restore_rng_state({"python": random.getstate(), "numpy_global": {}, "numpy_generator": None}, None)


def test_cuda_state_on_a_cpu_machine_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    state = capture_rng_state(None)
    if torch.cuda.is_available():
        pytest.skip("only meaningful without CUDA")
    assert state["torch_cuda"] is None
    state["torch_cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    with pytest.warns(UserWarning, match="CUDA is not available"):
        restore_rng_state(state, None)


def _same(a: object, b: object) -> bool:
    """Equal all the way down: tensors by value and dtype, containers by type and items."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_check_weights_only_safe_accepts_nested_state(tmp_path: Path) -> None:
    """What runs save - network and Adam state (int keys, lists of param groups), every RNG
    stream (tuples, 128-bit ints, a cached gaussian) - passes the save-time check, and
    rightly so: torch's weights_only loader reads each back equal, nested types included."""
    np.random.seed(5)
    np.random.randn()  # a cached gaussian in the legacy global state
    states = {"model": _model_and_optimizer_state(), "rng": capture_rng_state(np.random.default_rng(0))}
    for name, state in states.items():
        assert check_weights_only_safe(state) is None, name
        torch.save(state, tmp_path / f"{name}.pt")
        assert _same(torch.load(tmp_path / f"{name}.pt", weights_only=True), state), name
