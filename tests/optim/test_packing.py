"""Packed buffers: one owner (`tapegrad._arrays._packed`), one optimizer-level helper (`map_packed`).

The optimizer packs, the replay recognises, and they meet only through the
array-level API: no other module reads the registry, and no generated guard
names it. A transform written as ``optim/_packing.py`` tells a newcomer to
write one (here RMSProp's scaling) is packed eagerly, and its replay updates
the donated state where it lies.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, assert_type

import attrs
import numpy as np

import tapegrad as tg
from tapegrad import Tensor, optim
from tapegrad._arrays import _packed
from tapegrad.optim._packing import map_packed, zeros_like_flat

PACKAGE = Path(tg.__file__).parent


def test_map_packed_runs_the_update_once_and_takes_its_own_views_back_without_a_copy() -> None:
    grads = [tg.tensor(np.ones((2, 3), np.float32)), tg.tensor(np.full(4, 2.0, np.float32))]
    state = zeros_like_flat(grads)
    assert state is not None
    given: list[tuple[int, ...]] = []

    def update(g: Any, v: Any) -> tuple[Any, Any]:
        given.append((id(g), id(v)))
        return g + v, g * 2

    summed, doubled = map_packed(update, grads, state)
    assert len(given) == 1  # one call for every leaf
    assert [t.shape for t in summed] == [(2, 3), (4,)] and [t.dtype for t in doubled] == [np.float32] * 2
    assert doubled[1].data.tolist() == [4.0] * 4
    buffer = summed[0].data.base
    assert summed[1].data.base is buffer
    assert _packed.find_run([t.data for t in summed], 0) == (buffer, ((2, 3), (4,)))
    map_packed(update, summed, state)
    assert given[1] == (id(buffer), id(state[0].data.base))  # the buffers themselves, not copies


def test_map_packed_runs_leaf_by_leaf_on_flattened_arrays_when_dtypes_differ() -> None:
    leaves = [tg.tensor(np.arange(6.0).reshape(2, 3)), tg.tensor(np.float32(3.0))]
    shapes: list[tuple[int, ...]] = []

    def update(x: Any) -> tuple[Any]:
        shapes.append(x.shape)
        return (x * 2,)

    (doubled,) = map_packed(update, leaves)
    assert shapes == [(6,), (1,)]  # a 0-d leaf comes as a 1-d array, which `out=` can take
    assert doubled[0].data.tolist() == [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    assert doubled[1].shape == () and doubled[1].dtype == np.float32 and float(doubled[1].item()) == 6.0


def test_an_update_of_no_parameters_gives_no_leaves() -> None:
    assert map_packed(lambda g, m: (g + m, g - m, g * m), [], []) == [[], [], []]
    none: dict[str, Tensor] = {}
    for opt in (optim.adam(), optim.sgd(0.1), optim.sgd(0.1, momentum=0.9)):
        params, state = opt.update(none, opt.init(none), none)
        assert params == {} and int(state[-1].count.item()) == 1


def test_no_module_reads_the_registry_of_packed_buffers() -> None:
    # The optimizer and the replay meet only through `_packed`'s public functions.
    private = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_packed.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_packed"):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "_packed" and node.attr.startswith("_"):
                    private.append(f"{path.name}: _packed.{node.attr}")
    assert private == []


def _step(params: dict[str, Tensor], state: Any, x: Tensor) -> tuple[dict[str, Tensor], Any]:
    with tg.Tape() as tape:
        loss = ((x @ params["w"] + params["b"]) ** 2).mean()
    return OPTIMIZER.update(tape.gradient(loss, params), state, params)


def test_the_replay_guard_names_no_registry() -> None:
    step = tg.replay(_step)
    params, state, x = _start()
    for _ in range(4):  # traced on fresh arrays, then on the optimizer's packed views
        params, state = step(params, state, x)
    assert (step.traces, step.replays) == (2, 2)
    assert step._guard is not None
    guard = step._guard[0]
    assert len(guard(((params, state, x), {})) or ()) == 4  # both packed buffers whole, the step count, x
    assert all(value is not _packed._REGISTRY for value in guard.__globals__.values())


@attrs.frozen
class RmsState:
    """The running mean of the squared gradients, a pytree like the parameters."""

    v: Any


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8) -> optim.Transform[RmsState]:
    """RMSProp's scaling, written as ``optim/_packing.py``'s docstring says."""

    def init(params: Any) -> RmsState:
        leaves, treedef = tg.tree.flatten(params)
        zeros = zeros_like_flat(leaves)
        assert zeros is not None  # host arrays of one dtype
        return RmsState(treedef.unflatten(zeros))

    def rms_arrays(g: Any, v: Any) -> tuple[Any, Any]:
        v2 = g * g
        v2 -= v
        v2 *= 1.0 - decay
        v2 += v
        direction = np.sqrt(v2)
        direction += eps
        np.divide(g, direction, out=direction)
        return direction, v2

    def update_leaves(grads: list[Tensor], state: RmsState, params: Any, treedef: Any) -> tuple[list[Tensor], RmsState]:
        out, new_v = map_packed(rms_arrays, grads, tg.tree.leaves(state.v))
        return out, RmsState(treedef.unflatten(new_v))

    return optim.Transform(init, update_leaves)


OPTIMIZER = optim.Optimizer(optim.chain(scale_by_rms(), optim.scale_by_learning_rate(0.01)))


def _start() -> tuple[dict[str, Tensor], Any, Tensor]:
    rng = np.random.default_rng(0)
    params = {"w": tg.tensor(rng.standard_normal((4, 3)).astype(np.float32)), "b": tg.tensor(np.zeros(3, np.float32))}
    return params, OPTIMIZER.init(params), tg.tensor(rng.standard_normal((5, 4)).astype(np.float32))


def test_a_transform_opting_into_packing_replays_bit_for_bit_in_its_donated_state() -> None:
    step = tg.replay(_step, donate_argnums=(0, 1))
    params, state, x = _start()
    eager_params, eager_state, _ = _start()
    for _ in range(4):
        given = {id(leaf.data) for leaf in tg.tree.leaves(state[0].v)}
        params, state = step(params, state, x)
        eager_params, eager_state = _step(eager_params, eager_state, x)
        for new, old in zip(tg.tree.leaves((params, state)), tg.tree.leaves((eager_params, eager_state))):
            assert new.data.tobytes() == old.data.tobytes()
    assert (step.traces, step.replays) == (2, 2)  # fresh parameters, then packed ones
    # `v2 += v`, the last read of the donated v, wrote into v: its registered views came back.
    assert {id(leaf.data) for leaf in tg.tree.leaves(state[0].v)} == given


def test_chains_and_updates_keep_their_types() -> None:
    chained = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    assert_type(chained, optim.Transform[tuple[optim.AdamState, optim.ScaleState]])
    params = {"w": tg.tensor([1.0, 2.0])}
    state = chained.init(params)
    updates, state = chained.update({"w": tg.tensor([0.5, 0.5])}, state, params)
    new = assert_type(optim.apply_updates(params, updates), dict[str, Tensor])
    assert new["w"].shape == (2,) and isinstance(state[0], optim.AdamState)


def _torch_style() -> tuple[Any, Any, Any]:
    import tapegrad.torchlike as tl

    np.random.seed(0)
    net = tl.Sequential(tl.Linear(6, 5), tl.ReLU(), tl.Linear(5, 3))
    opt = tl.Adam(net.parameters(), lr=1e-2)
    criterion = tl.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    x, y = tl.Tensor(rng.random((4, 6))), tl.Tensor(rng.integers(0, 3, 4))

    def train_step() -> Any:
        opt.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return net, opt, train_step


def test_a_replayed_torch_style_step_packs_first_gradients_in_parameter_order() -> None:
    import tapegrad.torchlike as tl
    from tapegrad.optim._packing import flat_of

    net, opt, train_step = _torch_style()
    train_step()
    params = net.parameters()
    assert _packed.find_run([p.grad.data for p in params], 0) is None  # eagerly, as before
    step = tl.replay(train_step, net, opt)
    step()  # traced: backward() packs, and the views come back as the new .grad
    grads = [p.grad.data for p in params]
    run = _packed.find_run(grads, 0)
    assert run is not None and run[1] == tuple(p.shape for p in params)
    assert flat_of([p.grad.value for p in params]) is run[0]  # what step() updates from: no copy
    # A second backward() without zero_grad() adds into the gradients, as before.
    first = [g.copy() for g in grads]
    loss = (params[0] * 2.0).sum()
    loss.backward()
    assert np.array_equal(params[0].grad.data, first[0] + 2.0)
    assert all(np.array_equal(p.grad.data, g) for p, g in zip(params[1:], first[1:]))


def test_a_replayed_torch_style_step_takes_the_gradients_as_one_buffer() -> None:
    import tapegrad.torchlike as tl

    net, opt, train_step = _torch_style()
    step = tl.replay(train_step, net, opt)
    for _ in range(3):
        step()
    replayed = step.replayed  # type: ignore[attr-defined]
    assert (replayed.traces, replayed.replays) == (2, 1)  # no gradients yet, then packed ones
    roles = [leaf.role for leaf in replayed._last_binding.leaves]
    # Parameters, gradients, first and second moments: one buffer each; the only other
    # arrays are the two step counts.
    assert roles.count("buffer") == 4 and roles.count("array") == 2


def test_a_packed_view_reshaped_in_place_is_no_longer_taken_for_its_buffer() -> None:
    params = [tg.tensor(np.arange(6.0).reshape(2, 3)), tg.tensor(np.ones(4))]
    opt = optim.sgd(0.1)
    params, _ = opt.update([tg.tensor(np.ones((2, 3))), tg.tensor(np.ones(4))], opt.init(params), params)

    @tg.replay
    def sums(ps: list[Tensor]) -> list[Tensor]:
        return [p.sum(axis=0) for p in ps]

    sums(params)
    sums(params)
    assert sums.replays == 1
    params[0].data.shape = (3, 2)
    assert _packed.find_run([p.data for p in params], 0) is None
    expected = [p.sum(axis=0) for p in params]  # eagerly: sums of (3, 2), not (2, 3)
    assert [t.data.tobytes() for t in sums(params)] == [t.data.tobytes() for t in expected]
    assert sums(params)[0].shape == (2,)
