"""Reversible column (docs/architecture.md): the memory-saving path must equal plain autograd exactly."""
import gc
import weakref

import pytest
import torch
from torch import nn

from fke_basicsr.ops.reversible import CarriedRef, clamp_alphas_, reversible_column

torch.set_num_threads(2)


class Level(nn.Module):
    """conv -> GELU -> dropout -> conv, with an optional down-/up-sampler in front and an optional fused input."""

    def __init__(self, cin: int, c: int, resample: str = 'none', fuse: int = 0, p: float = 0.2) -> None:
        super().__init__()
        if resample == 'down':
            self.pre = nn.Conv2d(cin, c, 2, 2)
        elif resample == 'up':
            self.pre = nn.Sequential(nn.Conv2d(cin, 4 * c, 1), nn.PixelShuffle(2))
        else:
            self.pre = nn.Identity() if cin == c else nn.Conv2d(cin, c, 1)
        self.fuse = nn.Conv2d(c + fuse, c, 1) if fuse else None
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Dropout(p),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x, extra=None):
        x = self.pre(x)
        if self.fuse is not None and isinstance(extra, torch.Tensor):
            x = self.fuse(torch.cat([x, extra], 1))
        return x + self.body(x)


def alphas_for(chs):
    return nn.ParameterList([nn.Parameter(torch.full((1, c, 1, 1), 0.5) + 0.1 * torch.randn(1, c, 1, 1)) for c in chs])


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def run_both(build, loss_of):
    """Run build() twice (plain, reversible) from the same RNG seed; return outputs and all gradients."""
    results = []
    for save in (False, True):
        torch.manual_seed(123)
        leaves, outs = build(save)
        loss = loss_of(outs)
        for t in leaves:
            t.grad = None
        loss.backward()
        results.append(([o.detach().clone() for o in outs], [t.grad.clone() if t.grad is not None else None
                                                             for t in leaves]))
    (o0, g0), (o1, g1) = results
    for a, b in zip(o0, o1):
        assert torch.equal(a, b)
    assert len(g0) == len(g1)
    for i, (a, b) in enumerate(zip(g0, g1)):
        assert (a is None) == (b is None), f'leaf {i}: gradient presence differs'
        if a is not None:
            assert rel(b, a) <= 1e-5, f'leaf {i}: relative error {rel(b, a):.2e}'
    return g0


def weighted_sum(outs):
    gen = torch.Generator().manual_seed(7)
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)


def test_clamp_alphas():
    a = torch.tensor([0.0, 1e-4, -1e-4, 0.5, -0.7, -1e-3])
    b = nn.Parameter(torch.tensor([[2e-4]]))
    clamp_alphas_([a, None, b])
    assert torch.equal(a, torch.tensor([1e-3, 1e-3, -1e-3, 0.5, -0.7, -1e-3]))
    assert torch.equal(b.data, torch.tensor([[1e-3]]))


def make_encoder(chs=(4, 8, 16)):
    levels = nn.ModuleList([Level(chs[0], chs[0])] + [Level(chs[j - 1], chs[j], 'down') for j in (1, 2)])
    return levels, alphas_for(chs)


@pytest.mark.parametrize('mid', [False, True])
def test_encoder_two_columns(mid):
    """Encoder (and mid-encoder with injected u_j): 2 columns chained, outputs of both columns in the loss."""
    torch.manual_seed(0)
    chs = (4, 8, 16)
    cols = []
    for _ in range(2):
        levels = nn.ModuleList([Level(chs[0], chs[0], fuse=chs[0] if mid else 0)] +
                               [Level(chs[j - 1], chs[j], 'down', fuse=chs[j] if mid else 0) for j in (1, 2)])
        cols.append((levels, alphas_for(chs)))
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    us = [torch.randn(2, c, 16 >> j, 16 >> j, requires_grad=True) for j, c in enumerate(chs)]
    params = [p for lv, al in cols for p in list(lv.parameters()) + list(al)]

    def build(save):
        carried = [0, 0, 0]
        outs = []
        for levels, alphas in cols:
            extras = [[u] for u in us] if mid else ()
            carried = reversible_column(list(levels), list(alphas), x, carried, extras, save_memory=save)
            outs += carried
        return [x, *us, *params], outs

    grads = dict(zip(map(id, [x, *us, *params]), run_both(build, weighted_sum)))
    col0_alphas = {id(a) for a in cols[0][1]}   # first column: no carried term, so no alpha gradient
    for t in [x, *(us if mid else []), *params]:
        assert (grads[id(t)] is None) == (id(t) in col0_alphas)


def test_decoder_two_columns():
    """Decoder: d_j = a_j s_j + F_j(d_{j-1}); skips are real tensors in both columns, last carried 0 in column 0."""
    torch.manual_seed(1)
    cols = []
    for _ in range(2):
        levels = nn.ModuleList([Level(16, 8, 'up'), Level(8, 4, 'up'), Level(4, 4)])
        cols.append((levels, alphas_for((8, 4, 4))))
    latent = torch.randn(2, 16, 4, 4, requires_grad=True)
    s2 = torch.randn(2, 8, 8, 8, requires_grad=True)
    s1 = torch.randn(2, 4, 16, 16, requires_grad=True)
    params = [p for lv, al in cols for p in list(lv.parameters()) + list(al)]

    def build(save):
        outs = []
        d_prev = 0
        for levels, alphas in cols:
            d = reversible_column(list(levels), list(alphas), latent, [s2, s1, d_prev], save_memory=save)
            d_prev = d[2]
            outs += d
        return [latent, s2, s1, *params], outs

    grads = run_both(build, weighted_sum)
    no_grad = cols[0][1][2]   # column 0, last level: carried is 0, so its alpha is unused
    assert all((g is None) == (t is no_grad) for t, g in zip([latent, s2, s1, *params], grads))


class FKELevel(nn.Module):
    """F_j(c, p) = block(fuse(cat[c, p])) when p is a tensor, block(c) otherwise (first column / level 3)."""

    def __init__(self, c: int, fuse: bool) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(2 * c, c, 1) if fuse else None
        self.block = Level(c, c)

    def forward(self, x, p=0):
        if self.fuse is not None and isinstance(p, torch.Tensor):
            x = self.fuse(torch.cat([x, p], 1))
        return self.block(x)


def test_fke_subresnet_two_columns():
    """c_j = a_j p_j + F_j(c_{j-1}, p_{j+1}) (j < 3), c_3 = a_3 p_3 + F_3(c_2): p_{j+1} gets two gradients."""
    torch.manual_seed(2)
    c = 4
    col0 = (nn.ModuleList([FKELevel(c, False) for _ in range(4)]), alphas_for((c,) * 4))
    col1 = (nn.ModuleList([FKELevel(c, j < 3) for j in range(4)]), alphas_for((c,) * 4))
    x0 = torch.randn(2, c, 8, 5, requires_grad=True)
    x1 = torch.randn(2, c, 8, 5, requires_grad=True)
    params = [p for lv, al in (col0, col1) for p in list(lv.parameters()) + list(al)]
    refs = [[CarriedRef(1)], [CarriedRef(2)], [CarriedRef(3)], []]

    def build(save):
        r = reversible_column(list(col0[0]), list(col0[1]), x0, [0, 0, 0, 0], refs, save_memory=save)
        r2 = reversible_column(list(col1[0]), list(col1[1]), x1, r, refs, save_memory=save)
        return [x0, x1, *params], r + r2

    grads = run_both(build, weighted_sum)
    unused = {id(a) for a in col0[1]}   # first column: alpha terms vanish
    assert all((g is None) == (id(t) in unused) for t, g in zip([x0, x1, *params], grads))


def test_carried_ref_gradient_only_path():
    """carried[k] used only as an extra elsewhere (its output ignored) still gets the right gradient."""
    torch.manual_seed(3)
    levels = nn.ModuleList([FKELevel(3, True) for _ in range(2)])
    alphas = alphas_for((3, 3))
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    p = [torch.randn(1, 3, 6, 6, requires_grad=True) for _ in range(2)]

    def build(save):
        out = reversible_column(list(levels), list(alphas), x, p, [[CarriedRef(1)], []], save_memory=save)
        return [x, *p, *levels.parameters(), *alphas], out[:1]

    run_both(build, weighted_sum)


def test_first_column_and_plain_callables():
    """First column (no carried term); non-Module callables use the RevCol fallback (.grad accumulation)."""
    torch.manual_seed(4)
    mods = [Level(3, 3), Level(3, 6, 'down')]
    fns = [lambda t, m=mods[0]: m(t), lambda t, m=mods[1]: m(t)]
    alphas = alphas_for((3, 6))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    params = [p for m in mods for p in m.parameters()]

    def build(save):
        return [x, *params], reversible_column(fns, list(alphas), x, [None, 0], save_memory=save)

    run_both(build, weighted_sum)


def test_autograd_grad_returns_parameter_grads():
    """Module fns: parameter gradients come out of torch.autograd.grad (no .grad side effects)."""
    torch.manual_seed(5)
    levels, alphas = make_encoder()
    x = torch.randn(1, 4, 8, 8)
    p = [torch.randn(1, c, 8 >> j, 8 >> j) for j, c in enumerate((4, 8, 16))]
    params = list(levels.parameters()) + list(alphas)
    got = []
    for save in (False, True):
        torch.manual_seed(9)
        out = reversible_column(list(levels), list(alphas), x, p, save_memory=save)
        got.append(torch.autograd.grad(weighted_sum(out), params))
    assert all(q.grad is None for q in params)
    for a, b in zip(*got):
        assert rel(b, a) <= 1e-5


def test_carried_not_kept_alive():
    """The memory-saving path does not hold the previous column's features (plain autograd does)."""
    levels, alphas = make_encoder()
    x = torch.randn(1, 4, 8, 8)
    kept = {}
    for save in (False, True):
        leaves = [torch.randn(1, c, 8 >> j, 8 >> j, requires_grad=True) for j, c in enumerate((4, 8, 16))]
        p = [t * 2.0 for t in leaves]   # non-leaf, like a previous column's output (a leaf is held by its node)
        ref = weakref.ref(p[1])
        out = reversible_column(list(levels), list(alphas), x, p, save_memory=save)
        del p
        gc.collect()
        kept[save] = ref() is not None
        sum(o.sum() for o in out).backward()
        assert leaves[1].grad is not None
    assert kept == {False: True, True: False}


def test_gradcheck_double():
    """Finite differences on the memory-saving path (float64, no dropout)."""
    torch.manual_seed(6)
    levels = nn.ModuleList([Level(2, 2, fuse=2, p=0.0), Level(2, 2, fuse=2, p=0.0)]).double()
    alphas = [a.double() for a in alphas_for((2, 2))]
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    p = [torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    u = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    f = lambda x, p0, p1, u: tuple(reversible_column(list(levels), alphas, x, [p0, p1], [[CarriedRef(1)], [u]]))
    assert torch.autograd.gradcheck(f, (x, *p, u))


def test_inference_and_validation():
    levels, alphas = make_encoder()
    levels.eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        a = reversible_column(list(levels), list(alphas), x, [0, 0, 0], save_memory=True)
        b = reversible_column(list(levels), list(alphas), x, [0, 0, 0], save_memory=False)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match='alphas'):
        reversible_column(list(levels), list(alphas)[:2], x, [0, 0, 0])
    with pytest.raises(ValueError, match='carried'):
        reversible_column(list(levels), list(alphas), x, [0, 0])
    with pytest.raises(ValueError, match='extras'):
        reversible_column(list(levels), list(alphas), x, [0, 0, 0], [[]])
    with pytest.raises(ValueError, match='CarriedRef'):
        reversible_column(list(levels), list(alphas), x, [0, 0, 0], [[CarriedRef(0)], [], []])
    with pytest.raises(ValueError, match='carried\\[1\\]'):
        reversible_column(list(levels), list(alphas), x, [0, 'a', 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('amp', [None, torch.bfloat16])
def test_cuda_rng_replay_and_autocast(amp):
    """CUDA dropout masks are replayed and the autocast dtype restored in backward (fp32 and bf16)."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(8)
    dev = torch.device('cuda')
    chs = (4, 8, 16)
    cols = [(nn.ModuleList([Level(4, 4, fuse=4)] + [Level(chs[j - 1], chs[j], 'down', fuse=chs[j]) for j in (1, 2)])
             .to(dev), alphas_for(chs).to(dev)) for _ in range(2)]
    x = torch.randn(2, 4, 16, 16, device=dev, requires_grad=True)
    us = [torch.randn(2, c, 16 >> j, 16 >> j, device=dev, requires_grad=True) for j, c in enumerate(chs)]
    params = [p for lv, al in cols for p in list(lv.parameters()) + list(al)]
    results = []
    for save in (False, True):
        torch.manual_seed(11)
        for t in [x, *us, *params]:
            t.grad = None
        with torch.autocast('cuda', dtype=amp or torch.float32, enabled=amp is not None):
            carried = [0, 0, 0]
            outs = []
            for levels, alphas in cols:
                carried = reversible_column(list(levels), list(alphas), x, carried, [[u] for u in us], save)
                outs += carried
        sum((o.float() * (k + 1)).mean() for k, o in enumerate(outs)).backward()
        results.append(([o.detach() for o in outs], [t.grad for t in [x, *us, *params]]))
    (o0, g0), (o1, g1) = results
    assert all(torch.equal(a, b) for a, b in zip(o0, o1))
    assert amp is None or o0[0].dtype == amp
    tol = 1e-5 if amp is None else 1e-3
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel(b, a) <= tol
