"""benchmarks/forward_bound.py: a guided forward's matrix products, each timed alone."""

import jax
import pytest

from benchmark_scripts import benchmark_script
from ditjax.models import create_model, forward_macs


@pytest.fixture(scope="module")
def script():
    with benchmark_script("forward_bound") as module:
        yield module


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("DiT-S/2", {}), ("DiT-XL/2", {}), ("DiT-B/4", {"input_size": (16, 32)})],
)
def test_products_add_up_to_the_model_cost(script, name, overrides):
    model = create_model(name, **overrides)
    products = script.forward_products(model, examples=2)
    assert sum(product.calls * product.macs for product in products) == 2 * forward_macs(model)
    assert {product.calls for product in products} == {1, model.depth}


def test_timed_calls_do_not_compile(script):
    compiles = []

    def listener(event, duration, **kwargs):
        if "compile" in event:
            compiles.append(event)

    products = script.forward_products(create_model("DiT-S/8", input_size=16), examples=2)
    calls = [product.build() for product in products]
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for call in calls:
            call()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


def test_other_block_types_are_refused(script):
    with pytest.raises(ValueError, match="cross_attention"):
        script.forward_products(create_model("DiT-S/2", block_type="cross_attention"), 2)


def test_times_the_guided_forward_and_each_of_its_products(script, capsys):
    flags = ["--model=DiT-S/8", "--latent_size=16", "--batch_size=1", "--repeats=2"]
    result = script.main([*flags, "--warmup=0", "--matmul_size=64"])
    out = capsys.readouterr().out
    assert "(2 examples)" in out  # CFG doubles the batch
    for name in ("qkv", "attention", "proj", "fc1", "fc2", "final linear"):
        assert f"| {name} |" in out
        assert result["products"][name] > 0
    assert "products alone:" in out and "x its products alone" in out
    assert result["reference_flops_per_s"] > 0 and result["forward_s"] > 0
    model = create_model("DiT-S/8", input_size=16)
    assert result["flops"] == 2 * 2 * forward_macs(model)
    calls = {p.name: p.calls for p in script.forward_products(model, 2)}
    assert result["products_s"] == pytest.approx(
        sum(calls[name] * s for name, s in result["products"].items())
    )


def test_bad_flags_stop_before_any_timing(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--batch_size=0"])
    assert exit_info.value.code == 2
    assert "argument --batch_size: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="DiT-Q/2"):
        script.main(["--model=DiT-Q/2"])
