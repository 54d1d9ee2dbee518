"""The fast trainer's cache: each message's frozen-prefix activations, computed once, in memory or on disk.

A message's key is its token ids up to the position the classifier reads: causal attention looks no further,
so that row of activations is all the trainable top needs. The cache takes a share of the memory available
(psutil) and spills beyond it to a nameless temporary file read back through a memory map, so the fast
trainer's cost grows with the data instead of falling off a cliff when memory runs out.
"""

import contextlib
import copy
import functools
import mmap
import re
import shutil
import tempfile
import time

import psutil
import torch
from tqdm.auto import tqdm

import gpt_model

# The cache's default memory budget: this share of the memory available when it starts (the rest stays free
# for the model, the optimizer and everything else running). Beyond it the cache spills to a file.
CACHE_MEMORY_SHARE = 0.5


def _num_frozen_blocks(model):
    """How many blocks from the bottom have no trainable parameter (the prefix the cache may hold)."""
    for i, block in enumerate(model.trf_blocks):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(model.trf_blocks)


def _fingerprint(model, num_frozen):
    """A cheap summary of the frozen weights that changes when they change, even through `.data` writes.

    A tensor's _version misses writes through `.data` and id() misses copies into the same tensor, so this
    reads the values: a strided sample of at most 4096 per tensor, whatever the model's size. Where the values
    live does not count: a copy of a model (each of notebook 8's runs starts from one) shares the cache.
    """
    frozen = [*model.tok_emb.parameters(), *model.pos_emb.parameters(),
              *model.trf_blocks[:num_frozen].parameters()]
    with torch.no_grad():
        samples = [p.detach().reshape(-1)[:: p.numel() // 4096 + 1] for p in frozen]
        sums = torch.stack([s.double().sum() for s in samples]).tolist()
    return tuple((p.dtype, tuple(p.shape), s) for p, s in zip(frozen, sums))


def parse_size(text):
    """Bytes from "8GB", "512MB", "1.5G", "0" or a plain number (powers of 1024); ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like 8GB, 512MB or 0.")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2] or " "))


def _gb(num_bytes):
    """Bytes as a short human figure for progress lines."""
    return f"{num_bytes / 2**30:.2f} GB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MB"


class ActivationCache:
    """The frozen prefix's output per message, in memory up to a budget and beyond it in one temporary file.

    A message's key is its token ids up to the position the classifier reads: causal attention looks no
    further, so that row of activations ([length, emb_dim], in the precision the top runs in) is all the
    trainable top needs. The file is written once per fill pass, read back batch by batch through a memory
    map, and has no name on disk (TemporaryFile): it disappears on close, on Ctrl-C, on any exit.

    The caller holds it (`with ActivationCache() as cache:`) and hands it to the fast trainer and then to the
    fast predictions, which reuse its rows; `bind` empties it when it meets other frozen weights.
    """

    def __init__(self, memory=None, cache_dir=None):
        self.memory = (int(CACHE_MEMORY_SHARE * psutil.virtual_memory().available) if memory is None
                       else parse_size(memory))
        self.cache_dir = cache_dir  # None: the system's temporary folder
        self.signature = None
        self.stats = {"tokens": 0, "flops": 0, "seconds": 0.0, "pass_seconds": []}  # pass_seconds: per add()
        self.rows, self.file, self.map = {}, None, None
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def bind(self, model, device, precision="fp32"):
        """This cache, ready for model's frozen prefix: emptied first when the weights, device or precision changed."""
        num_frozen = _num_frozen_blocks(model)
        signature = (num_frozen, str(device), precision, _fingerprint(model, num_frozen))
        if signature != self.signature:
            self.close()
            self.signature, self.num_frozen, self.precision = signature, num_frozen, precision
            self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            self.emb_dim = model.tok_emb.weight.shape[1]
        return self

    def row_bytes(self, length):
        """What one message of `length` tokens costs in the cache."""
        return length * self.emb_dim * self.dtype.itemsize

    def add(self, model, rows, device, progress=True):
        """Run the frozen prefix once on the rows not cached yet (length-sorted chunks) and keep the results."""
        todo = sorted({message_key(r): r for r in rows if message_key(r) not in self.rows}.values(), key=len)
        total = sum(self.row_bytes(len(r)) for r in todo)
        to_disk = self._disk_room(max(0, self.memory_bytes + total - self.memory))
        bar = tqdm(total=len(todo), unit="msg", disable=not (progress and todo), mininterval=1.0,
                   desc=f"Frozen blocks -> {_gb(total)} cache")
        seconds_before = self.stats["seconds"]
        with bar:
            for chunk in length_chunks(todo):
                ids = torch.zeros(len(chunk), len(chunk[-1]), dtype=torch.long)
                for i, row in enumerate(chunk):
                    ids[i, : len(row)] = row
                x = self.prefix(model, ids.to(device)).to("cpu", self.dtype)
                for i, row in enumerate(chunk):
                    self.full |= not self._store(message_key(row), x[i, : len(row)], to_disk)
                bar.update(len(chunk))
                bar.set_postfix_str(f"{_gb(self.memory_bytes)} in memory, {_gb(self.disk_bytes)} on disk, "
                                    f"{self.gflops():.0f} GFLOP/s", refresh=False)
        if todo:
            self.stats["pass_seconds"].append(self.stats["seconds"] - seconds_before)
        if self.file is not None and self.disk_bytes > (len(self.map) if self.map is not None else 0):
            self.file.flush()  # written once; read back through a map of the whole file
            if self.map is not None:
                self.map.close()
            self.map = mmap.mmap(self.file.fileno(), self.disk_bytes, access=mmap.ACCESS_READ)

    def _store(self, key, x, to_disk):
        """Keep one row: in memory while the budget lasts, then in the file; False when neither has room."""
        size = self.row_bytes(len(x))
        if self.memory_bytes + size <= self.memory:
            self.rows[key] = x.clone()
            self.memory_bytes += size
        elif to_disk:
            self.file.write(x.contiguous().view(torch.uint8).numpy().tobytes())
            self.rows[key] = (self.disk_bytes, len(x))
            self.disk_bytes += size
        else:
            return False
        return True

    def _disk_room(self, needed):
        """True when `needed` bytes fit in the cache folder (opening the file); else one line saying so."""
        if needed <= 0:
            return False
        folder = self.cache_dir or tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if free < needed + 2**30:  # leave a GB for everything else
            print(f"Fast trainer: the cache needs {_gb(needed)} beyond --cache-memory but {folder} has "
                  f"{_gb(free)} free; those messages are recomputed each time (same results, slower). "
                  "Pass --cache-dir on a larger disk or a larger --cache-memory.")
            return False
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by close()): nameless, gone however the run ends
        return True

    def get(self, key):
        """A cached row [length, emb_dim] (a copy when it comes from the file), or None."""
        row = self.rows.get(key)
        if not isinstance(row, tuple):
            return row
        offset, length = row
        size = self.row_bytes(length)
        data = torch.frombuffer(bytearray(self.map[offset: offset + size]), dtype=self.dtype)
        if hasattr(self.map, "madvise"):  # drop the pages from this process (the OS keeps them cached)
            start = offset - offset % mmap.PAGESIZE
            self.map.madvise(mmap.MADV_DONTNEED, start, offset + size - start)
        return data.view(length, self.emb_dim)

    def prefix(self, model, ids):
        """The embeddings and the frozen blocks on ids [b, t], timed; bf16: weights cast once, not per call."""
        blocks = model.trf_blocks[: self.num_frozen]
        if self.precision == "bf16":
            if self.bf16_blocks is None:
                self.bf16_blocks = bf16_copy(blocks)
            blocks = self.bf16_blocks
        start = time.perf_counter()
        with torch.no_grad(), autocast_for(self.precision, ids.device):
            x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1], device=ids.device))
            x = blocks(x)
        if ids.device.type == "cuda":
            torch.cuda.synchronize(ids.device)  # the kernels run asynchronously: time their end
        b, t = ids.shape
        self.stats["seconds"] += time.perf_counter() - start
        self.stats["tokens"] += b * t
        self.stats["flops"] += self.num_frozen * (24 * b * t * self.emb_dim**2 + 4 * b * t * t * self.emb_dim)
        return x

    def gflops(self):
        """The frozen blocks' achieved speed so far: dense matrix-product FLOPs per second, in billions."""
        return self.stats["flops"] / self.stats["seconds"] / 1e9 if self.stats["seconds"] else 0.0

    def report(self):
        """The cache in numbers (frozen_gflops, tokens, prefix_seconds and per pass, memory_bytes, disk_bytes)."""
        return {"frozen_gflops": self.gflops(), "tokens": self.stats["tokens"], "prefix_seconds":
                self.stats["seconds"], "pass_seconds": list(self.stats["pass_seconds"]), "memory_bytes": self.memory_bytes, "disk_bytes": self.disk_bytes}

    def close(self):
        """Free the memory and remove the file now (Python would also do it at exit); the cache stays usable."""
        if self.map is not None:
            self.map.close()
        if self.file is not None:
            self.file.close()
        self.rows, self.file, self.map, self.memory_bytes, self.disk_bytes = {}, None, None, 0, 0
        self.bf16_blocks, self.full, self.signature = None, False, None


def bf16_copy(blocks):
    """The frozen blocks with their Linear weights in bf16, cast once (autocast would cast them every call).

    LayerNorm and the residual stream stay fp32, as autocast runs them. A chapter TransformerBlock becomes a
    _Bf16Block (one product for queries, keys and values; the feed-forward's first product and its GELU in one
    oneDNN kernel where it can): the results differ from autocast's by bf16 rounding only.
    """
    blocks = copy.deepcopy(blocks)
    for module in blocks.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
    return torch.nn.Sequential(*[_Bf16Block(b) if _is_chapter_block(b) else b for b in blocks])


def _is_chapter_block(block):
    """True for the chapter's causal TransformerBlock with plain Linear projections (no LoRA, no dropout)."""
    att = block.att
    return (type(block).forward is gpt_model.TransformerBlock.forward and getattr(att, "causal", False)
            and all(type(m) is torch.nn.Linear for m in (att.W_query, att.W_key, att.W_value))
            and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in block.modules()))


class _Bf16Block(torch.nn.Module):
    """A TransformerBlock's forward with its products in bf16 and queries, keys and values in one product.

    Three [tokens, 768] x [768, 768] products become one [tokens, 768] x [768, 2304] (the matrix units prefer
    the larger), and the LayerNorm's output is cast to bf16 once instead of once per projection.
    """

    def __init__(self, block):
        super().__init__()
        att = block.att
        self.num_heads, self.head_dim = att.num_heads, att.head_dim
        self.norm1, self.norm2, self.out_proj = block.norm1, block.norm2, att.out_proj
        projections = (att.W_query, att.W_key, att.W_value)
        # skip_init: no random initialization, so the global random numbers the loop draws stay the chapter's
        self.qkv = torch.nn.utils.skip_init(torch.nn.Linear, att.W_query.in_features, 3 * att.d_out,
                                            bias=att.W_query.bias is not None, dtype=att.W_query.weight.dtype)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([m.weight for m in projections]))
            if self.qkv.bias is not None:
                self.qkv.bias.copy_(torch.cat([m.bias for m in projections]))
        fused = _fused_gelu_works() and type(block.ff).forward is gpt_model.FeedForward.forward
        self.ff = _FusedGeluFeedForward(block.ff) if fused else block.ff

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x).to(self.qkv.weight.dtype)
        q, k, v = self.qkv(h).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out_proj(context.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.norm2(x).to(self.qkv.weight.dtype))


class _FusedGeluFeedForward(torch.nn.Module):
    """FeedForward in bf16 with its first Linear and the tanh GELU fused in one oneDNN call."""

    def __init__(self, ff):
        super().__init__()
        self.up, self.down = ff.layers[0], ff.layers[2]

    def forward(self, x):
        up = self.up
        return self.down(torch.ops.mkldnn._linear_pointwise(x.to(up.weight.dtype), up.weight, up.bias, "gelu", [],
                                                            "tanh"))


@functools.cache
def _fused_gelu_works():
    """True when this PyTorch has oneDNN's fused Linear + tanh GELU for bf16 (a private op: checked, not assumed)."""
    x, w = torch.ones(2, 8, dtype=torch.bfloat16), torch.ones(4, 8, dtype=torch.bfloat16)
    try:
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "gelu", [], "tanh")
    except (AttributeError, RuntimeError):
        return False
    expected = torch.nn.functional.gelu(torch.full((2, 4), 8.0), approximate="tanh")
    return bool(torch.allclose(out.float(), expected))


def length_chunks(rows):
    """Consecutive slices of length-sorted rows with up to 4096 tokens each (padding counted): big products."""
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and (end + 1 - start) * len(rows[end]) <= 4096:
            end += 1
        yield rows[start:end]
        start = end


def message_key(tokens):
    """Cache key of a message: its token ids up to the read position (causal attention looks no further)."""
    return tokens.to(torch.int64).cpu().numpy().tobytes()


def autocast_for(precision, device):
    """bfloat16 autocast when asked for (opt-in: faster where supported, not bit-comparable), else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
