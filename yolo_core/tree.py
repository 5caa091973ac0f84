"""WordTree runtime for YOLO9000: group softmax, absolute probabilities, hierarchical loss, decode.

A :class:`Tree` holds darknet's ``.tree`` structure as tensors (no WordNet, no nltk): node n
has parent ``parent[n]`` (-1 for roots); siblings are contiguous and form one softmax group.
Every op works on a ``(..., num_nodes)`` tensor in node order.

- :meth:`Tree.log_softmax`: conditional ``log P(node | parent)``, one softmax per group. The
  shift that keeps ``exp`` finite is each group's own maximum, so groups far below the row
  maximum keep their precision.
- :meth:`Tree.absolute` / :meth:`Tree.absolute_log`: ``P(node) = P(node | parent) P(parent)``,
  a scan down the tree one depth level at a time (each level is one vectorized gather); the
  backward pass is the reverse scan (hand-written, exact: no division by probabilities).
- :meth:`Tree.nll`: the hierarchical cross-entropy of a label node: the softmax cross-entropy
  of every group on its path, nothing for groups below it or off its path.
- :meth:`Tree.absolute_softmax`: ``absolute(softmax(logits))``; with ``Y9K_TREE_KERNEL=1`` it
  runs one fused CPU kernel (``_tree_kernels.cpp``, compiled once per machine by torch's
  extension loader, ~10 s of CPU, ``-march=native``): the memory traffic of a flat softmax (the
  forward keeps only its output; the backward needs nothing else), group work vectorized across
  groups with AVX-512 where the CPU has it, rows on every torch thread, and large outputs advised
  onto transparent huge pages (first-touch page faults on a 1.2 GB output otherwise cost more
  than the arithmetic). Opt-in, so no run pays a compile it did not ask for;
  it falls back to the ops above when the kernel cannot be built or the tensor is not a float
  CPU tensor.
- :meth:`Tree.decode`: darknet's top-down decode (``hierarchy_top_prediction``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
_KERNEL: object = None  # None: not tried yet; False: unavailable


def fused_kernel():
    """The compiled fused kernel module, or None when it is disabled or cannot be built."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = False
        if os.environ.get("Y9K_TREE_KERNEL", "0") == "1":
            try:
                from torch.utils.cpp_extension import load

                # -fopenmp: at::parallel_for is OpenMP in torch's headers; without it rows run on one thread.
                # A plain library that registers torch.ops.y9k_tree_kernels (forward, backward).
                load(name="y9k_tree_kernels", sources=[str(Path(__file__).with_name("_tree_kernels.cpp"))],
                     extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"], extra_ldflags=["-lmvec", "-fopenmp"],
                     is_python_module=False)
                _KERNEL = torch.ops.y9k_tree_kernels
            except Exception as e:  # no compiler, no headers: the torch ops still work
                log.warning("fused WordTree kernel unavailable (%s); using torch ops", e)
    return _KERNEL or None


class TreeFileError(ValueError):
    """A malformed ``.tree`` file; the message names the file and line."""

    user_facing = True


def _check(parents: Sequence[int], source: str) -> None:
    n = len(parents)
    finished: set[int] = set()
    for i, p in enumerate(parents):
        at = f"{source} line {i + 1}"
        if p < -1 or p >= n:
            raise TreeFileError(f"{at}: parent index {p} out of range (-1 or 0..{n - 1})")
        if p >= i:
            raise TreeFileError(f"{at}: parent {p} does not precede node {i} (a cycle, or parent after child)")
        if i > 0 and p != parents[i - 1]:
            if p in finished:
                raise TreeFileError(f"{at}: the children of node {p} are not contiguous")
            finished.add(parents[i - 1])


class _PathScan(torch.autograd.Function):
    """out[n] = v[n] (op) out[parent[n]] down the tree; op is + (log domain) or * (probabilities)."""

    @staticmethod
    def forward(ctx, v: Tensor, tree: Tree, mul: bool) -> Tensor:
        out = v.clone()
        for nodes, parents in tree._levels[1:]:
            up = out.index_select(-1, parents)
            out.index_copy_(-1, nodes, v.index_select(-1, nodes) * up if mul else v.index_select(-1, nodes) + up)
        ctx.tree, ctx.mul = tree, mul
        if mul:  # the product's backward needs both factors; the sum's needs neither
            ctx.save_for_backward(v, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        tree, mul = ctx.tree, ctx.mul
        g = grad.clone()  # accumulates d loss / d out, deepest level first
        gv = g if not mul else torch.empty_like(grad)
        if mul:
            v, out = ctx.saved_tensors
            roots = tree._levels[0][0]
        for nodes, parents in reversed(tree._levels[1:]):
            gn = g.index_select(-1, nodes)
            if mul:
                gv.index_copy_(-1, nodes, gn * out.index_select(-1, parents))
                g.index_add_(-1, parents, gn * v.index_select(-1, nodes))
            else:
                g.index_add_(-1, parents, gn)
        if mul:
            gv.index_copy_(-1, roots, g.index_select(-1, roots))
        return gv, None, None


class _GroupLogSoftmax(torch.autograd.Function):
    """One log-softmax per sibling group along the last dimension."""

    @staticmethod
    def forward(ctx, x: Tensor, tree: Tree) -> Tensor:
        g = tree.group
        shape = (*x.shape[:-1], tree.num_groups)
        m = x.new_full(shape, float("-inf")).scatter_reduce_(-1, g.expand_as(x), x, "amax")
        z = x - m.index_select(-1, g)
        s = x.new_zeros(shape).index_add_(-1, g, z.exp())
        out = z.sub_(s.log_().index_select(-1, g))
        ctx.tree = tree
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        g = ctx.tree.group
        gsum = grad.new_zeros((*grad.shape[:-1], ctx.tree.num_groups)).index_add_(-1, g, grad)
        return grad - out.exp() * gsum.index_select(-1, g), None


class _FusedAbsoluteSoftmax(torch.autograd.Function):
    """absolute(group softmax(x)) for a (R, N) contiguous float CPU tensor, via the C++ kernel."""

    @staticmethod
    def forward(ctx, x: Tensor, tree: Tree, kernel) -> Tensor:
        a = kernel.forward(x, *tree._kernel_index(), True)
        ctx.tree, ctx.kernel = tree, kernel
        ctx.save_for_backward(a)  # the backward needs only the output (see _tree_kernels.cpp)
        return a

    @staticmethod
    def backward(ctx, grad: Tensor):
        (a,) = ctx.saved_tensors
        gx = ctx.kernel.backward(grad.contiguous(), a, *ctx.tree._kernel_index(), True)
        return gx, None, None


class Tree(nn.Module):
    """The tree structure as buffers; ``tree.to(device)`` moves them."""

    def __init__(self, parents: Sequence[int], wnids: Sequence[str] | None = None,
                 names: Sequence[str] | None = None, source: str = "tree") -> None:
        super().__init__()
        parents = [int(p) for p in parents]
        if not parents:
            raise TreeFileError(f"{source}: empty tree")
        _check(parents, source)
        n = len(parents)
        self.wnids = list(wnids) if wnids is not None else None
        self.names = list(names) if names is not None else None
        group, offsets, depth = [], [], [0] * n
        child_group = [-1] * n
        for i, p in enumerate(parents):
            if i == 0 or p != parents[i - 1]:
                offsets.append(i)
                if p >= 0:
                    child_group[p] = len(offsets) - 1
            group.append(len(offsets) - 1)
            depth[i] = depth[p] + 1 if p >= 0 else 0
        sizes = [b - a for a, b in zip(offsets, offsets[1:] + [n])]
        max_depth = max(depth) + 1
        # path[n] = n, parent, ..., root, padded with n (= an index past the last node).
        paths = []
        for i in range(n):
            row, j = [], i
            while j >= 0:
                row.append(j)
                j = parents[j]
            paths.append(row + [n] * (max_depth - len(row)))
        # Group members padded to the largest group, with n (a column that never wins).
        members = [list(range(o, o + s)) + [n] * (max(sizes) - s) for o, s in zip(offsets, sizes)]
        self.register_buffer("parent", torch.tensor(parents, dtype=torch.long))
        self.register_buffer("group", torch.tensor(group, dtype=torch.long))
        self.register_buffer("group_offset", torch.tensor(offsets, dtype=torch.long))
        self.register_buffer("group_size", torch.tensor(sizes, dtype=torch.long))
        self.register_buffer("depth", torch.tensor(depth, dtype=torch.long))
        self.register_buffer("child_group", torch.tensor(child_group, dtype=torch.long))
        self.register_buffer("group_parent", torch.tensor([parents[o] for o in offsets], dtype=torch.long))
        self.register_buffer("paths", torch.tensor(paths, dtype=torch.long))
        self.register_buffer("members", torch.tensor(members, dtype=torch.long))
        by_depth = sorted(range(n), key=lambda i: (depth[i], i))
        self.register_buffer("level_nodes", torch.tensor(by_depth, dtype=torch.long))
        self._level_bounds = [sum(1 for d in depth if d < k) for k in range(max_depth + 1)]

    @classmethod
    def load(cls, path: str | Path) -> Tree:
        """Read a darknet ``.tree`` file (``<wnid> <parent>`` per line)."""
        wnids, parents = [], []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                parts = line.split()
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise TreeFileError(f"{path} line {i + 1}: expected '<wnid> <parent index>', got {line.rstrip()!r}")
                wnids.append(parts[0])
                parents.append(int(parts[1]))
        return cls(parents, wnids=wnids, source=str(path))

    @classmethod
    def from_wordtree(cls, wt) -> Tree:
        """From anything with ``.parents`` (and optionally ``.wnids`` / ``.names``)."""
        return cls(wt.parents, wnids=getattr(wt, "wnids", None), names=getattr(wt, "names", None))

    @property
    def num_nodes(self) -> int:
        return self.parent.numel()

    @property
    def num_groups(self) -> int:
        return self.group_offset.numel()

    @property
    def _levels(self) -> list[tuple[Tensor, Tensor]]:
        """(nodes, their parents) per depth level, on the buffers' device."""
        b = self._level_bounds
        out = []
        for a, z in zip(b, b[1:]):
            nodes = self.level_nodes[a:z]
            out.append((nodes, self.parent.index_select(0, nodes)))
        return out

    def _kernel_index(self) -> tuple[Tensor, ...]:
        return self.group_offset, self.group_size, self.group_parent, self.group

    def _check_last(self, x: Tensor) -> None:
        if x.shape[-1] != self.num_nodes:
            raise ValueError(f"last dimension is {x.shape[-1]}, the tree has {self.num_nodes} nodes")

    def log_softmax(self, logits: Tensor) -> Tensor:
        """Conditional log P(node | parent), one softmax per sibling group."""
        self._check_last(logits)
        return _GroupLogSoftmax.apply(logits, self)

    def softmax(self, logits: Tensor) -> Tensor:
        return self.log_softmax(logits).exp()

    def absolute(self, cond_p: Tensor) -> Tensor:
        """Absolute P(node): the product of conditional probabilities down its path."""
        self._check_last(cond_p)
        return _PathScan.apply(cond_p, self, True)

    def absolute_log(self, cond_logp: Tensor) -> Tensor:
        """Absolute log P(node): the sum of conditional log-probabilities down its path."""
        self._check_last(cond_logp)
        return _PathScan.apply(cond_logp, self, False)

    def absolute_softmax(self, logits: Tensor) -> Tensor:
        """``absolute(softmax(logits))``: absolute P(node) from logits, fused on CPU when possible."""
        self._check_last(logits)
        kernel = fused_kernel() if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64) \
            else None
        if kernel is None:
            return self.absolute(self.softmax(logits))
        flat = logits.reshape(-1, self.num_nodes).contiguous()
        return _FusedAbsoluteSoftmax.apply(flat, self, kernel).reshape(logits.shape)

    def path_log_prob(self, cond_logp: Tensor, label: Tensor) -> Tensor:
        """log P(label) = sum of the conditional log-probabilities on its path; 0 where label == -1."""
        self._check_last(cond_logp)
        valid = label >= 0
        path = self.paths[label.clamp(min=0)]  # (..., max_depth), padded with num_nodes
        padded = torch.cat([cond_logp, cond_logp.new_zeros((*cond_logp.shape[:-1], 1))], -1)
        total = padded.gather(-1, path).sum(-1)
        return torch.where(valid, total, torch.zeros_like(total))

    def nll(self, logits: Tensor, label: Tensor) -> Tensor:
        """Hierarchical cross-entropy of `label` (node index, -1 = none) per prediction."""
        return -self.path_log_prob(self.log_softmax(logits), label)

    @torch.no_grad()
    def decode(self, abs_p: Tensor, hier_thresh: float = 0.5, compound: bool = False) -> tuple[Tensor, Tensor]:
        """Top-down decode as darknet's ``hierarchy_top_prediction``: from the root group, take
        the most probable node while its probability exceeds `hier_thresh`; return the last
        node taken (in the root group, the best root even below the threshold), and its
        absolute probability.

        ``compound=True`` reproduces darknet HEAD's region layer exactly: it feeds absolute
        probabilities and multiplies them along the way (``p * max``), a stricter test.
        """
        self._check_last(abs_p)
        flat = abs_p.reshape(-1, self.num_nodes)
        rows = flat.shape[0]
        padded = torch.cat([flat, flat.new_full((rows, 1), -1.0)], -1)
        group = torch.zeros(rows, dtype=torch.long, device=flat.device)
        p_acc = flat.new_ones(rows)
        result = torch.full((rows,), -1, dtype=torch.long, device=flat.device)
        active = torch.ones(rows, dtype=torch.bool, device=flat.device)
        first = True
        while bool(active.any()):
            cand = self.members[group]  # (rows, largest group)
            vals = padded.gather(1, cand)
            best_val, best_pos = vals.max(1)
            best = cand.gather(1, best_pos[:, None])[:, 0]
            score = p_acc * best_val if compound else best_val
            passed = score > hier_thresh
            take = active & (passed | torch.as_tensor(first, device=flat.device))
            result = torch.where(take, best, result)
            if compound:
                p_acc = torch.where(active & passed, score, p_acc)
            nxt = self.child_group[best]
            active = active & passed & (nxt >= 0)
            group = torch.where(active, nxt, group)
            first = False
        prob = flat.gather(1, result[:, None])[:, 0]
        shape = abs_p.shape[:-1]
        return result.reshape(shape), prob.reshape(shape)

    def subset(self, abs_p: Tensor, nodes: Tensor) -> Tensor:
        """Scores of a label subset, e.g. the 200 DET classes: (..., K)."""
        self._check_last(abs_p)
        return abs_p.index_select(-1, nodes.to(abs_p.device))
