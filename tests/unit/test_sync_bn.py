"""BatchNorm over the global batch on CPU: two ranks, each with half the batch, compute what one
process computes on the whole batch, for torch's BatchNorm2d and timm's BatchNormAct2d alike."""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from timm.layers import BatchNormAct2d

from isim import distributed


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Conv2d(4, 5, 3), BatchNormAct2d(5, act_layer=torch.nn.ReLU))


def _rank(rank: int, port: int, x: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = distributed.sync_batchnorm(_net(), cuda=False).train()
    y = net(x[rank * 2:(rank + 1) * 2])
    y.square().mean().backward()
    grads = net[0].weight.grad.clone()
    dist.all_reduce(grads)  # what DDP does: the mean of the ranks' gradients
    out[rank] = (y.detach(), grads / 2, net[3].running_mean.clone(), type(net[1]).__name__, type(net[3]).__name__)
    dist.destroy_process_group()


def test_two_ranks_normalise_with_the_whole_batch_for_plain_and_timm_batchnorm():
    x = torch.randn(4, 3, 9, 9)
    one = _net().train()
    y = one(x)
    (y.square().mean()).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(port, x, out), nprocs=2)
    assert out[0][3:] == ("GlobalBatchNorm", "GlobalBatchNormAct")
    torch.testing.assert_close(torch.cat([out[0][0], out[1][0]]), y.detach(), atol=1e-5, rtol=1e-4)
    # the per-rank losses are means over half the batch: their average is the whole batch's loss
    torch.testing.assert_close(out[0][1], one[0].weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[0][2], one[3].running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1][2], one[3].running_mean, atol=1e-6, rtol=1e-5)
