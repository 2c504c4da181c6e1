from core.train_loop import TrainSettings, lr_lambda
from stages import domain

TRAIN = {"steps": 10, "batch_size": 8, "lr": 1e-3}


def test_sequential_replay_and_joint_mixture_shares():
    seq = domain.Config(mode="sequential", replay_fraction=0.25, train=TRAIN)
    joint = domain.Config(mode="joint", domain_ratio=0.7, train=TRAIN)
    assert domain.general_share(seq) == 0.25
    assert abs(domain.general_share(joint) - 0.3) < 1e-9


def test_warmup_then_cosine_to_floor():
    f = lr_lambda(TrainSettings(steps=110, batch_size=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(10) - 1.0) < 1e-9 and abs(f(60) - 0.55) < 1e-9 and abs(f(110) - 0.1) < 1e-9
