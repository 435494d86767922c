"""The smoke recipes' ``eval.options.linear`` is a valid command line of the linear protocol and
gives the cheap probe it claims (recipe built as ``linear`` builds it; nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup_zoo.evaluation import linear
from selfsup_zoo.evaluation.cli import build_parser
from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.verify import parse_eval_options
from selfsup_zoo.training.recipe import load_recipe

SMOKE_WITH_LINEAR = ["smoke_care"]


@pytest.mark.parametrize("name", SMOKE_WITH_LINEAR)
def test_smoke_linear_options_give_the_cheap_probe(name: str) -> None:
    recipe = load_recipe(name)
    assert "linear" in recipe.eval.protocols
    extra = parse_eval_options(recipe.eval.option_items())["linear"]
    parser = build_parser(linear, "linear")
    args = parser.parse_args(
        ["local-dir:/nowhere", "--train", recipe.eval.train, "--val", recipe.eval.val, *extra]
    )
    transform = EvalTransform(32, 0.875, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    probe = linear._build_recipe(args, Path("/nowhere"), 10, transform, "cnn")
    assert probe.name == "linear_care"
    assert (probe.engine.epochs, probe.engine.global_batch) == (3, 16)
    assert probe.engine.eval_epochs == [3]
    assert probe.optim.base_lr == pytest.approx(0.05)
    assert probe.data.workers == 0
    assert list(probe.data.view_args["scale"]) == [1.0, 1.0]
    assert probe.data.view_args["flip"] is False
    # what stays CARE's protocol: the head, the optimizer and its schedule
    assert probe.method.config["batchnorm"] == "auto"
    assert (probe.optim.name, probe.optim.momentum, probe.optim.weight_decay) == ("sgd", 0.9, 0.0)
    assert (probe.optim.lr_schedule, probe.optim.warmup_epochs) == ("cosine", 0)
