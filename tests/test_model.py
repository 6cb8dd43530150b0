import torch

from bench.seed_mnist import Digit as SeedDigit
from trainer.distributed import World, reseed_per_rank
from trainer.model import Digit


def test_output_is_log_probabilities_per_image():
    out = Digit()(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_state_dict_matches_the_seed_and_loads_into_it():
    ours, seed = Digit().state_dict(), SeedDigit().state_dict()
    assert list(ours) == list(seed)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in seed.items()}
    seed_model = SeedDigit().eval()
    seed_model.load_state_dict(ours, strict=True)
    x = torch.rand(3, 1, 28, 28)
    model = Digit().eval()
    model.load_state_dict(ours)
    assert torch.equal(seed_model(x), model(x))


def test_dropout_acts_only_while_training():
    """Training draws new masks each call; eval mode (export, inference) is the plain network, and so is a
    model built with dropout off, in either mode."""
    x = torch.rand(8, 1, 28, 28)
    model = Digit()
    plain = Digit(dropout=False)
    plain.load_state_dict(model.state_dict())
    assert not torch.equal(model(x), model(x))
    assert torch.equal(plain(x), plain(x))
    model.eval()
    assert torch.equal(model(x), plain(x))


def test_ranks_draw_their_own_dropout_masks_and_one_process_keeps_its_stream():
    def draws(world: World) -> torch.Tensor:
        torch.manual_seed(0)
        reseed_per_rank(0, world)
        return torch.rand(4)

    torch.manual_seed(0)
    alone = torch.rand(4)
    assert torch.equal(draws(World(0, 1)), alone)
    rank0, rank1 = draws(World(0, 2)), draws(World(1, 2))
    assert not torch.equal(rank0, rank1) and not torch.equal(rank0, alone)
