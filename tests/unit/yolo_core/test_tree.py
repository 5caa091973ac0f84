"""The torch WordTree runtime against plain per-group loops, gradcheck and darknet's decode."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import shared_path
from yolo_core.tree import Tree, TreeFileError

# Two roots; node 0 has children 2, 3, 4; node 1 has 5, 6; node 2 has 7, 8; node 5 has 9.
PARENTS = [-1, -1, 0, 0, 0, 1, 1, 2, 2, 5]


@pytest.fixture
def tree() -> Tree:
    return Tree(PARENTS)


def naive_log_softmax(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    groups: dict[int, list[int]] = {}
    for n, p in enumerate(PARENTS):
        groups.setdefault(p, []).append(n)
    for nodes in groups.values():
        out[..., nodes] = torch.log_softmax(x[..., nodes], -1)
    return out


def naive_absolute(p: torch.Tensor) -> torch.Tensor:
    out = p.clone()
    for n, par in enumerate(PARENTS):
        if par >= 0:
            out[..., n] = p[..., n] * out[..., par]
    return out


def test_structure(tree):
    assert tree.num_nodes == 10 and tree.num_groups == 5
    assert tree.group.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 4]
    assert tree.group_size.tolist() == [2, 3, 2, 2, 1]
    assert tree.depth.tolist() == [0, 0, 1, 1, 1, 1, 1, 2, 2, 2]


def test_ops_match_naive_loops(tree):
    x = torch.randn(4, 3, 10, dtype=torch.float64)
    logp = tree.log_softmax(x)
    assert torch.allclose(logp, naive_log_softmax(x))
    p = tree.softmax(x)
    ab = tree.absolute(p)
    assert torch.allclose(ab, naive_absolute(p))
    assert torch.allclose(tree.absolute_log(logp).exp(), ab)
    assert torch.allclose(ab[..., :2].sum(-1), torch.ones(4, 3, dtype=torch.float64))  # roots sum to 1
    assert torch.allclose(ab[..., 2:5].sum(-1), ab[..., 0])  # children share their parent's mass
    label = torch.tensor([[7, 9, -1]] * 4)
    lp = tree.path_log_prob(logp, label)
    assert torch.allclose(lp[:, 0], ab[:, 0, 7].log()) and torch.allclose(lp[:, 1], ab[:, 1, 9].log())
    assert (lp[:, 2] == 0).all()
    assert torch.equal(tree.subset(ab, torch.tensor([9, 0])), ab[..., [9, 0]])


def test_gradcheck_float64(tree):
    x = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    label = torch.tensor([8, 3, -1])
    assert torch.autograd.gradcheck(tree.log_softmax, (x,))
    assert torch.autograd.gradcheck(lambda v: tree.nll(v, label), (x,))
    p = tree.softmax(x).detach().requires_grad_()
    assert torch.autograd.gradcheck(tree.absolute, (p,))
    assert torch.autograd.gradcheck(tree.absolute_log, (p.log().detach().requires_grad_(),))
    # Zero probabilities: the product's backward never divides.
    p0 = p.detach().clone()
    p0[:, 2] = 0
    assert torch.autograd.gradcheck(tree.absolute, (p0.requires_grad_(),))


def test_nll_only_touches_groups_on_the_path(tree):
    x = torch.randn(10, requires_grad=True)
    tree.nll(x, torch.tensor(7)).backward()
    touched = (x.grad != 0).nonzero().flatten().tolist()
    assert touched == [0, 1, 2, 3, 4, 7, 8]  # groups of 7, 2 and 0; not node 1's or 5's children
    y = torch.randn(10, requires_grad=True)
    tree.nll(y, torch.tensor(2)).backward()  # an inner label: nothing below it
    assert (y.grad[[7, 8]] == 0).all() and (y.grad[[0, 1, 2, 3, 4]] != 0).all()
    z = torch.randn(10, requires_grad=True)
    assert tree.nll(z, torch.tensor(-1)) == 0


def test_numerically_stable(tree):
    x = torch.randn(5, 10) * 30
    x[:, 5:7] -= 1e4  # a group far below the row maximum keeps its own distribution
    x[:, 9] = -1e4
    logp = tree.log_softmax(x)
    assert torch.isfinite(logp).all()
    assert torch.allclose(logp[:, 5:7], torch.log_softmax(x[:, 5:7], -1), atol=1e-5)
    x.requires_grad_(True)
    tree.nll(x, torch.full((5,), 9)).sum().backward()
    assert torch.isfinite(x.grad).all()


def darknet_top(pred: list[float], t: Tree, thresh: float, compound: bool) -> int:
    """hierarchy_top_prediction transcribed from darknet's tree.c (HEAD)."""
    offsets, sizes, child = t.group_offset.tolist(), t.group_size.tolist(), t.child_group.tolist()
    p, group = 1.0, 0
    while True:
        mx, mi = 0.0, 0
        for i in range(sizes[group]):
            if pred[offsets[group] + i] > mx:
                mx, mi = pred[offsets[group] + i], offsets[group] + i
        score = p * mx if compound else mx
        if score > thresh:
            p = score if compound else p
            group = child[mi]
            if group < 0:
                return mi
        elif group == 0:
            return mi
        else:
            return PARENTS[offsets[group]]


@pytest.mark.parametrize("compound", [False, True])
def test_decode_matches_darknet(tree, compound):
    torch.manual_seed(0)
    ab = tree.absolute(tree.softmax(torch.randn(200, 10) * 3))
    for thresh in (0.2, 0.5, 0.8):
        node, prob = tree.decode(ab, thresh, compound=compound)
        want = [darknet_top(row.tolist(), tree, thresh, compound) for row in ab]
        assert node.tolist() == want
        assert torch.equal(prob, ab.gather(1, node[:, None])[:, 0])
    node, _ = tree.decode(ab.reshape(10, 20, 10))
    assert node.shape == (10, 20)


def test_load_9k_and_bad_files(tmp_path):
    t = Tree.load(shared_path("darknet", "9k.tree"))
    assert (t.num_nodes, t.num_groups) == (9418, 1846)
    ab = t.absolute(t.softmax(torch.randn(2, 9418)))
    assert torch.allclose(ab[:, :4].sum(-1), torch.ones(2))
    for text, msg in [("a -1\nb 1\n", "line 2: parent 1 does not precede"),
                      ("a -1\nb -1\nc 0\nd 1\ne 0\n", "line 5: the children of node 0 are not contiguous"),
                      ("a -1\nb x\n", "line 2: expected")]:
        p = tmp_path / "bad.tree"
        p.write_text(text)
        with pytest.raises(TreeFileError, match=msg):
            Tree.load(p)


def test_from_wordtree_and_device():
    class WT:
        parents, wnids, names = PARENTS, [f"n{i:08d}" for i in range(10)], [str(i) for i in range(10)]

    t = Tree.from_wordtree(WT()).to("cpu")
    assert t.wnids[3] == "n00000003" and t.parent.device.type == "cpu"
    with pytest.raises(ValueError, match="last dimension"):
        t.log_softmax(torch.zeros(3, 9))


@pytest.mark.parametrize("kernel", ["0", "1"])
def test_absolute_softmax_fused_matches_composition(tree, kernel, monkeypatch):
    from yolo_core import tree as tree_module

    monkeypatch.setenv("Y9K_TREE_KERNEL", kernel)
    monkeypatch.setattr(tree_module, "_KERNEL", None)  # decide again under this setting
    fused_kernel = tree_module.fused_kernel
    x = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    ref = tree.absolute(tree.softmax(x))
    assert torch.allclose(tree.absolute_softmax(x), ref)
    assert torch.autograd.gradcheck(tree.absolute_softmax, (x,))
    big = torch.randn(4, 10) * 30
    big[:, 5:7] -= 1e4  # this group's sum underflows under the row-maximum shift: redone exactly
    assert torch.allclose(tree.absolute_softmax(big), tree.absolute(tree.softmax(big)), atol=1e-6)
    if kernel == "0":
        assert fused_kernel() is None  # opt-in: nothing is compiled unless asked for
    elif fused_kernel() is None:
        pytest.skip("fused kernel not built here (no compiler?): the composition was tested")


def _random_tree(seed: int, n_groups: int = 60) -> list[int]:
    """Darknet order, groups of 1..40 nodes (several past the 16-lane SIMD chunk), two roots' groups."""
    gen = torch.Generator().manual_seed(seed)
    parents: list[int] = []
    frontier = [-1]
    for gi in range(n_groups):
        size = int(torch.randint(1, 41 if gi % 7 == 0 else 7, (1,), generator=gen))
        p = frontier.pop(int(torch.randint(0, len(frontier), (1,), generator=gen))) if gi else -1
        start = len(parents)
        parents.extend([p] * size)
        frontier.extend(range(start, start + size))
    return parents


@pytest.fixture
def built_kernel(monkeypatch):
    """The compiled kernel (decided again under Y9K_TREE_KERNEL=1), or a skip saying why."""
    from yolo_core import tree as tree_module

    monkeypatch.setenv("Y9K_TREE_KERNEL", "1")
    monkeypatch.setattr(tree_module, "_KERNEL", None)
    kernel = tree_module.fused_kernel()
    if kernel is None:
        pytest.skip("fused kernel not built here (no compiler?)")
    return kernel


def _float32_matches_float64(t: Tree, x: torch.Tensor, g: torch.Tensor) -> None:
    """absolute_softmax in float32 (the kernel) against the float64 torch ops, forward and backward."""
    x64 = x.double().requires_grad_()
    ref = t.absolute(t.softmax(x64))
    ref.backward(g.double())
    x32 = x.clone().requires_grad_()
    out = t.absolute_softmax(x32)
    out.backward(g)
    assert out.dtype == torch.float32 and torch.isfinite(x32.grad).all()
    assert torch.allclose(out.double(), ref.detach(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_kernel_float32_forward_backward(seed, built_kernel):
    """The float32 kernel (the SIMD path where built with AVX-512) against float64 torch ops."""
    t = Tree(_random_tree(seed))
    assert t.num_groups % 16 != 0 and int(t.group_size.max()) > 32
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(37, t.num_nodes, generator=gen) * 3
    x[:5, t.group_offset[3]:t.group_offset[3] + t.group_size[3]] -= 1e4  # underflowing group: redone
    x[5, :] = 0  # equal scores
    x[6, 0] -= 300  # a root far below the others: its subtree's absolute probabilities are 0 in float32
    _float32_matches_float64(t, x, torch.randn(37, t.num_nodes, generator=gen))


def _layered_tree() -> list[int]:
    """Darknet order, level by level: a root group; a 20- and a 25-node group; a level of 45
    groups (three chunks of 16 in the kernel's level layout, two groups past 16 nodes); then a
    chain of 20 single-group levels."""
    parents = [-1] * 3 + [0] * 20 + [1] * 25
    for k in range(3, 48):
        parents += [k] * (18 if k == 10 else 35 if k == 40 else 2)
    leaf = len(parents) - 1
    for depth in range(20):
        start = len(parents)
        parents += [leaf] * (1 + depth % 3)
        leaf = start
    return parents


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_kernel_float32_levels(seed, built_kernel):
    """Many levels, levels wider than 16 groups, single-group levels: the kernel's level layout."""
    t = Tree(_layered_tree())
    assert int(t.depth.max()) == 22 and t.num_nodes % 16 != 0
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(21, t.num_nodes, generator=gen) * 2
    x[:3, 48:50] -= 1e4  # an underflowing group in the wide level: redone
    _float32_matches_float64(t, x, torch.randn(21, t.num_nodes, generator=gen))


def test_fused_kernel_large_output_on_several_threads(built_kernel):
    """Outputs over 64 MB take the huge-page advice, and rows are split over threads: the result is
    the same, bit for bit, as one thread on ordinary pages (each row is computed the same way)."""
    kernel = built_kernel
    t = Tree(_random_tree(1))
    rows = (80 << 20) // (4 * t.num_nodes) + 1  # > 64 MB of float32
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(rows, t.num_nodes, generator=gen)
    g = torch.randn(rows, t.num_nodes, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = kernel.forward(x, *t._kernel_index(), True)
        gx = kernel.backward(g, a, *t._kernel_index(), True)
        torch.set_num_threads(1)
        a1 = kernel.forward(x, *t._kernel_index(), False)
        gx1 = kernel.backward(g, a1, *t._kernel_index(), False)
    finally:
        torch.set_num_threads(threads)
    assert a.nbytes > 64 << 20
    assert torch.equal(a, a1) and torch.equal(gx, gx1)
    ref = t.absolute(t.softmax(x[:64].double()))
    assert torch.allclose(a[:64].double(), ref, rtol=1e-4, atol=1e-6)
