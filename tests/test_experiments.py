"""experiments.py: the bonus switches that change the model (LoRA as the bonus experiments run it)."""

import pytest
import torch

import cli
import experiments
import gpt_model


def tiny_classifier(seed=123):
    torch.manual_seed(seed)
    return gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))


def test_lora_scales_by_alpha_as_the_bonus_and_offers_alpha_over_rank():
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    for scaling, factor in (("alpha", 8.0), ("alpha_over_rank", 4.0)):
        linear = torch.nn.Linear(6, 4)
        wrapped = experiments.LinearWithLoRA(linear, rank=2, alpha=8, scaling=scaling)
        with torch.no_grad():
            wrapped.lora.B.fill_(1.0)
        expected = linear(x) + factor * (x @ wrapped.lora.A @ wrapped.lora.B)
        assert torch.allclose(wrapped(x), expected, atol=1e-5), scaling
    default = experiments.LinearWithLoRA(torch.nn.Linear(6, 4), rank=2, alpha=8)
    assert default.lora.scaling == "alpha"  # the bonus experiments' (and appendix E's) scaling by default
    with pytest.raises(ValueError, match="alpha_over_rank"):
        experiments.LoRALayer(6, 4, 2, 8, scaling="rank")


def test_lora_classifier_trains_and_wraps_its_new_head_as_the_bonus():
    model = experiments.setup_classifier(tiny_classifier(), 2, "lora", lora_rank=2, lora_alpha=2)
    assert isinstance(model.out_head, experiments.LinearWithLoRA)
    assert model.out_head.linear.weight.requires_grad and model.out_head.linear.bias.requires_grad
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("out_head.") and ".lora." not in n for n in frozen)
    scaled = experiments.setup_classifier(tiny_classifier(), 2, "lora", lora_rank=2, lora_alpha=2,
                                          lora_scaling="alpha_over_rank")
    assert experiments.lora_settings(scaled)["lora_scaling"] == "alpha_over_rank"


def test_help_says_how_lora_is_scaled():
    text = cli.build_arg_parser().format_help()
    assert "--lora-scaling" in text and "alpha_over_rank" in text
    args = cli.build_arg_parser().parse_args(["--trainable-layers", "lora"])
    assert args.lora_scaling == "alpha"


def test_classifier_switches_are_read_off_the_model():
    model = experiments.setup_classifier(tiny_classifier(), 2, "lora", lora_rank=4, lora_alpha=8,
                                         disable_causal_mask=True)
    assert experiments.classifier_switches(model) == {
        "lora": {"lora_rank": 4, "lora_alpha": 8.0, "lora_scaling": "alpha"}, "causal": False}
    rebuilt = experiments.rebuild_classifier_switches(tiny_classifier(), {"switches": experiments.classifier_switches(model)})
    assert experiments.classifier_switches(rebuilt) == experiments.classifier_switches(model)
