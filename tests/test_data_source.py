"""Trainers take pipelines of batches (grain / tfds style) as well as arrays (issue 16)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import subnets
from subnets import subspace, train
from subnets.data import as_source, batches
from subnets.nested.finetune import finetune
from subnets.pruning import imp, make_train_fn

EPOCHS, BS = 2, 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def problem():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(6,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype("float32")
    y = (np.argmax(x[:, :3], 1)).astype("int32")
    return net, net.init(jax.random.key(0)), x, y


def _array_order(x, y, key, epochs=EPOCHS, bs=BS):
    """The batches the array path draws, epoch by epoch (the trainers' key schedule)."""
    return [list(batches(x, y, bs, key=k)) for k in jax.random.split(key, epochs)]


def _same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v))
                                      for u, v in zip(la, lb, strict=True))


def _dicts(order):
    """tfds.as_numpy style: a generator of {"image", "label"} dicts per epoch."""
    return lambda e: ({"image": xb, "label": yb} for xb, yb in order[e])


def test_fit_callable_of_dicts_is_bit_identical_to_arrays(problem):
    net, v, x, y = problem
    key = jax.random.key(3)
    ref = train.fit(net, v, x, y, epochs=EPOCHS, batch_size=BS, key=key, progress=False)
    order = _array_order(x, y, key)
    src = as_source(_dicts(order), steps_per_epoch=len(order[0]))
    got = train.fit(net, v, src, epochs=EPOCHS, progress=False)  # default schedule, no key
    assert _same(ref, got)
    # A wrong order gives different weights: the comparison can fail.
    swapped = [order[1], order[0]]
    other = train.fit(net, v, as_source(_dicts(swapped), steps_per_epoch=len(order[0])),
                      epochs=EPOCHS, progress=False)
    assert not _same(ref, other)


def test_fit_one_shot_stream_cut_into_epochs_matches_arrays(problem):
    net, v, x, y = problem
    key = jax.random.key(4)
    tx = optax.adam(1e-3)
    ref = train.fit(net, v, x, y, epochs=EPOCHS, batch_size=BS, key=key, tx=tx, progress=False)
    order = _array_order(x, y, key)
    stream = (b for epoch in order for b in epoch)  # one flat generator, e.g. iter(loader)
    got = train.fit(net, v, as_source(stream, steps_per_epoch=len(order[0])), epochs=EPOCHS,
                    tx=tx, progress=False)
    assert _same(ref, got)


def test_finetune_from_a_pipeline_matches_arrays(problem):
    net, v, x, y = problem
    key = jax.random.key(5)
    levels = [{"h0": 8, "h1": 8, "h2": 8}, {}]
    ref = finetune(net, v, levels, x, y, epochs=EPOCHS, batch_size=BS, key=key, progress=False)
    order = _array_order(x, y, key)
    got = finetune(net, v, levels, as_source(lambda e: order[e], steps_per_epoch=len(order[0])),
                   epochs=EPOCHS, progress=False)
    assert _same(ref.variables, got.variables)
    assert _same(ref.level_batch_stats, got.level_batch_stats)


def test_subspace_from_a_pipeline_matches_arrays(problem):
    net, v, x, y = problem
    key = jax.random.key(5)
    s0 = subspace.init_point(net, key=jax.random.key(0), compression="unstructured")
    sref = subspace.fit(net, s0, x, y, epochs=EPOCHS, batch_size=BS, key=key, progress=False)
    # subspace.fit splits each epoch key into (data, levels): feed the data half's order.
    data_keys = [jax.random.split(k)[0] for k in jax.random.split(key, EPOCHS)]
    sorder = [list(batches(x, y, BS, key=k)) for k in data_keys]
    sgot = subspace.fit(net, s0, as_source(lambda e: iter(sorder[e]),
                                           steps_per_epoch=len(sorder[0])),
                        epochs=EPOCHS, key=key, progress=False)
    assert _same(sref.base, sgot.base)


def test_imp_train_fn_from_a_callable_matches_arrays(problem):
    net, v, x, y = problem
    ref_fn = make_train_fn(net, x, y, epochs=1, batch_size=BS, rewind_step=2, progress=False)
    ref = imp(net, v, train_fn=ref_fn, levels=1, key=jax.random.key(6))
    # Every level trains with its own key: a callable sees the epoch only, so feed IMP's keys.
    # imp gives level i the key split(key, levels + 1)[i]; fit's one epoch of it is
    # split(level_key, 1)[0]. A callable sees only the epoch, so it walks those keys itself.
    keys = iter(jax.random.split(jax.random.key(6), 2))

    def epoch_batches(e):
        return batches(x, y, BS, key=jax.random.split(next(keys), 1)[0])

    fn = make_train_fn(net, as_source(epoch_batches, steps_per_epoch=len(x) // BS), epochs=1,
                       rewind_step=2, progress=False)
    got = imp(net, v, train_fn=fn, levels=1, key=jax.random.key(6))
    assert [lv.density for lv in got] == [lv.density for lv in ref]
    for a, b in zip(ref, got, strict=True):
        assert _same(a.variables, b.variables)


SHARDED = textwrap.dedent("""
    import json, jax, numpy as np, optax, subnets
    from subnets.data import as_source, batches
    assert len(jax.devices()) == 2, jax.devices()
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(6,), norm="batch")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.argmax(x[:, :3], 1).astype("int32")
    order = [list(batches(x, y, 16, key=k)) for k in jax.random.split(jax.random.key(1), 2)]
    dicts = lambda e: ({"image": a, "label": b} for a, b in order[e])
    v = net.init(jax.random.key(0))
    out = {}
    for name, mesh in (("single", None), ("dp", subnets.parallel.data_mesh(2))):
        w = subnets.train.fit(net, v, dicts, epochs=2, tx=optax.sgd(0.05), progress=False,
                              mesh=mesh)
        out[name] = np.asarray(w["params"]["dense0"]["kernel"]).tolist()
    try:
        subnets.train.fit(net, v, [(x[:5], y[:5])], epochs=1, tx=optax.sgd(0.05),
                          progress=False, mesh=subnets.parallel.data_mesh(2))
    except ValueError as e:
        out["uneven"] = str(e)
    print(json.dumps(out))
""")


def test_pipeline_batches_are_sharded_over_the_mesh():
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                        "--xla_cpu_multi_thread_eigen=false"}
    r = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["dp"], out["single"], rtol=2e-4, atol=2e-5)
    assert "batch of 5 examples does not split over 2 devices" in out["uneven"]


def test_unknown_length_needs_tx_and_counts_without_total(problem, monkeypatch):
    net, v, x, y = problem
    gen = lambda e: ((x[i:i + BS], y[i:i + BS]) for i in range(0, 64, BS))  # noqa: E731
    with pytest.raises(ValueError, match="batches per epoch .* unknown.*tx="):
        train.fit(net, v, gen, epochs=1, progress=False)
    totals = []
    monkeypatch.setattr(train, "_progress", lambda total, *a: totals.append(total))
    train.fit(net, v, gen, epochs=2, tx=optax.sgd(0.1), progress=True)
    assert totals == [None]
    with pytest.raises(ValueError, match="LCS schedules"):
        subspace.fit(net, subspace.init_point(net, key=jax.random.key(0),
                                              compression="structured"),
                     gen, epochs=1, key=jax.random.key(0), progress=False)


def test_exhausted_one_shot_iterator_says_pass_a_callable(problem):
    net, v, x, y = problem
    one = lambda: ((x[i:i + BS], y[i:i + BS]) for i in range(0, 64, BS))  # noqa: E731
    with pytest.raises(ValueError, match="one-shot iterator gives one epoch.*callable epoch"):
        train.fit(net, v, one(), epochs=3, tx=optax.sgd(0.1), progress=False)
    # One epoch per call of a one-shot iterator: IMP's second level finds it used up.
    fn = make_train_fn(net, one(), epochs=1, optimizer=optax.sgd(0.1), progress=False)
    fn(v, {}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="exhausted after 1 epoch.*pass a callable epoch"):
        fn(v, {}, key=jax.random.key(0))
    # A stream of 4 batches cut into epochs of 3 runs out during epoch 2.
    with pytest.raises(ValueError, match="exhausted after 1 of the 3 batches of epoch 2"):
        train.fit(net, v, as_source(one(), steps_per_epoch=3), epochs=2, progress=False)


@pytest.mark.parametrize("batch, match", [
    (lambda x, y: (x[:, :5], y), r"batch 0 of epoch 1: x has shape \(16, 5\).*\(batch, 6\)"),
    (lambda x, y: (x[..., None], y), r"rank 3.*rank 2"),
    (lambda x, y: (x, y + 3), r"labels must lie in \[0, 3\); found 16 outside"),
    (lambda x, y: (x, y.astype("float32")), "labels must be integers"),
    (lambda x, y: (x, y[:4]), r"y has shape \(4,\), expected \(16,\)"),
    (lambda x, y: {"pixels": x, "label": y}, r"dict with keys \['label', 'pixels'\]"),
    (lambda x, y: (x, y, y), "tuple of length 3"),
])
def test_bad_batches_are_named(problem, batch, match):
    net, v, x, y = problem
    data = [batch(x[:BS], y[:BS])]
    with pytest.raises((ValueError, TypeError), match=match):
        train.fit(net, v, data, epochs=1, progress=False)


def test_bad_data_arguments(problem):
    net, v, x, y = problem
    with pytest.raises(ValueError, match="y is missing"):
        train.fit(net, v, x, epochs=1, key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="key= is required"):
        train.fit(net, v, x, y, epochs=1, progress=False)
    with pytest.raises(TypeError, match="returned a int"):
        train.fit(net, v, as_source(lambda e: 3, steps_per_epoch=1), epochs=1, progress=False)
    with pytest.raises(ValueError, match="epoch 1 of the data gave no batches"):
        train.fit(net, v, lambda e: [], epochs=1, tx=optax.sgd(0.1), progress=False)
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1"):
        as_source([], steps_per_epoch=0)
    with pytest.raises(TypeError, match="training data must be"):
        as_source(3)


def test_resume_skips_epochs_of_a_one_shot_stream(problem, tmp_path):
    """A resumed run fed a fresh copy of a repeating stream skips the epochs already done."""
    net, v, x, y = problem
    order = _array_order(x, y, jax.random.key(8), epochs=3)
    flat = lambda: (b for epoch in order for b in epoch)  # noqa: E731
    n = len(order[0])
    ref = train.fit(net, v, as_source(flat(), steps_per_epoch=n), epochs=3, progress=False)
    ck = tmp_path / "ck"

    class Stop(Exception):
        pass

    def stop_in_epoch_3(k, state):
        if k == 2 * n + 1:
            raise Stop

    with pytest.raises(Stop):
        train.fit(net, v, as_source(flat(), steps_per_epoch=n), epochs=3, progress=False,
                  checkpoint_dir=ck, on_step=stop_in_epoch_3)
    got = train.fit(net, v, as_source(flat(), steps_per_epoch=n), epochs=3, progress=False,
                    checkpoint_dir=ck)
    assert _same(ref, got)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(1, 4))
def test_one_shot_stream_epochs_partition_the_stream(sizes, steps):
    """Epochs of a one-shot stream are consecutive, disjoint chunks of it, in order."""
    stream = [(np.full((s, 1), i, np.float32), np.zeros(s, np.int32))
              for i, s in enumerate(sizes)]
    src = as_source(iter(stream), steps_per_epoch=steps)
    seen = []
    for e in range(len(sizes) // steps):
        seen += [int(xb[0, 0]) for xb, _ in src.epoch(e)]
    assert seen == list(range(len(sizes) // steps * steps))


def test_dict_keys_x_y_and_tuples_give_the_same_batches():
    x, y = np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6) % 3
    forms = [[(x[:3], y[:3]), (x[3:], y[3:])],
             [{"x": x[:3], "y": y[:3]}, {"x": x[3:], "y": y[3:]}],
             [{"image": x[:3], "label": y[:3], "id": 0}, {"image": x[3:], "label": y[3:]}]]
    got = [[(a.tolist(), b.tolist()) for a, b in as_source(f).epoch(0)] for f in forms]
    assert got[0] == got[1] == got[2] == [(x[:3].tolist(), y[:3].tolist()),
                                          (x[3:].tolist(), y[3:].tolist())]
    src = as_source(forms[1])
    assert src.steps_per_epoch == 2 and src.kind == "iterable"
    list(src.epoch(0))
    assert src.sample()[0].shape == (6, 2) and src.first_batch()[1].tolist() == [0, 1, 2]
