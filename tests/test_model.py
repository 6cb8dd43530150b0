import torch

from bench.seed_mnist import Digit as SeedDigit
from trainer.model import Digit


def test_output_is_log_probabilities_per_image():
    out = Digit()(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_state_dict_matches_the_seed_and_loads_into_it():
    ours, seed = Digit().state_dict(), SeedDigit().state_dict()
    assert list(ours) == list(seed)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in seed.items()}
    seed_model = SeedDigit()
    seed_model.load_state_dict(ours, strict=True)
    x = torch.rand(3, 1, 28, 28)
    model = Digit()
    model.load_state_dict(ours)
    assert torch.equal(seed_model(x), model(x))
