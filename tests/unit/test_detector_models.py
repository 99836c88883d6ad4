"""Meso-4 / MesoInception-4: exact parameter counts, shapes of the feature taps, backward pass."""

from __future__ import annotations

import pytest
import torch

from mesodata.detector.models import MODEL_NAMES, count_parameters, create_model

# The Keras models' trainable parameters (Afchar et al. 2018; BatchNorm gamma/beta included).
EXPECTED = {"meso4": 27_977, "mesoinception4": 28_615}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_matches_keras(name):
    assert count_parameters(create_model(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_feature_taps_shapes(name):
    model = create_model(name).eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        fmap = model.forward_features(x)
        assert fmap.shape == (2, 16, 8, 8)
        assert model.flat_features(x).shape == (2, 1024)
        hidden = model.hidden_features(x)
        assert hidden.shape == (2, 16)
        logit = model(x)
        assert logit.shape == (2,)
        # The logit is the last dense layer applied to the hidden features.
        torch.testing.assert_close(logit, model.fc2(hidden).squeeze(1))


def test_hidden_features_are_after_leaky_relu():
    model = create_model("mesoinception4").eval()
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # force every pre-activation negative
        hidden = model.hidden_features(torch.rand(1, 3, 256, 256))
    assert (hidden < 0).all()
    pre = model.fc1(model.flat_features(torch.rand(1, 3, 256, 256)))
    assert torch.all(hidden > pre.min() * 0.1 - 1)  # slope 0.1, not 0 (ReLU) nor 1 (identity)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    # Signed input: with [0, 1] input a 1-channel ReLU branch can be dead at init (all its
    # weights negative), a true zero gradient that would hide nothing about the wiring.
    x = torch.rand(4, 3, 256, 256) * 2 - 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet50")
