"""Building a model without memory for its weights, then giving it the weights read from a file.

`empty_parameters` builds modules whose parameters live on the meta device: no memory is allocated for
them and their random initialisation does nothing. Buffers are built as usual (on the CPU, with their
values), so non-persistent ones that no file holds (position ids, masks) are correct. `assign_weights`
then makes the file's tensors the model's own (``load_state_dict(assign=True)``), so that the weights
exist once, where they were read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from itertools import chain

from torch import Tensor, nn

from ldmkit.storage import CheckpointError, first_keys

_local = threading.local()  # how deep this thread is inside empty_parameters
_lock = threading.Lock()
_users = 0  # open empty_parameters blocks, all threads together; the hook is installed while any is open
_original_register_parameter = nn.Module.register_parameter


def _register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _original_register_parameter(module, name, param)
    if param is not None and getattr(_local, "depth", 0) and type(param) is nn.Parameter and not param.is_meta:
        module._parameters[name] = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)


def no_transformers_init():
    """transformers' own switch that skips its models' weight initialisation (``post_init``), for models
    whose weights are assigned afterwards or never used (meta); a no-op without transformers."""
    for where in ("transformers.initialization", "transformers.modeling_utils"):  # transformers 5, then 4
        try:
            module = __import__(where, fromlist=["no_init_weights"])
        except ImportError:
            continue
        if hasattr(module, "no_init_weights"):
            return module.no_init_weights()
    return nullcontext()


@contextmanager
def empty_parameters() -> Iterator[None]:
    """Modules built by this thread inside the block get their parameters on the meta device.

    A parameter's tensor is created on the CPU (``torch.empty`` allocates without touching memory) and
    moved to the meta device as the module registers it, so the module's initialisation
    (``reset_parameters``, transformers' ``post_init``) runs on meta tensors and costs nothing. Other
    threads building modules at the same time are not affected.
    """
    global _users
    with _lock:
        if _users == 0:
            nn.Module.register_parameter = _register_parameter
        _users += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        with no_transformers_init():
            yield
    finally:
        _local.depth -= 1
        with _lock:
            _users -= 1
            if _users == 0 and nn.Module.register_parameter is _register_parameter:
                nn.Module.register_parameter = _original_register_parameter


def assign_weights(model: nn.Module, weights: dict[str, Tensor], what: str) -> None:
    """Make ``weights`` the tensors of ``model`` (built inside `empty_parameters`), emptying ``weights``.

    Every state-dict key of ``model`` must be in ``weights`` and nothing else. A tensor already in the
    dtype of the model's tensor is used as it is, not copied (for a memory-mapped file: the mapping's
    pages); one of another dtype is cast first, one at a time, as ``load_state_dict``'s copy would. A
    tensor sharing memory with one assigned before it is copied, so that no two parameters alias.
    Parameters keep their ``requires_grad``. Afterwards no tensor of ``model`` is left on the meta device, nor of
    a network held outside its module tree (a submodule's ``frozen_network()``, which no file holds: its
    constructor must load it whole, as `ldmkit.text.minilm` does, or it stays empty).
    """
    targets = model.state_dict(keep_vars=True)
    missing = [k for k in targets if k not in weights]
    unexpected = [k for k in weights if k not in targets]
    if missing or unexpected:  # the readers validated the keys; this guards the two against drifting
        parts = ([f"missing {first_keys(missing)}"] if missing else []) + (
            [f"unexpected {first_keys(unexpected)}"] if unexpected else []
        )
        raise CheckpointError(f"{what}: " + "; ".join(parts))
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, target in targets.items():
        tensor = weights.pop(key)
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype != target.dtype:
            tensor = tensor.to(target.dtype)
        if not tensor.is_contiguous():
            tensor = tensor.contiguous()
        if tensor.numel() and tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        state[key] = tensor
    model.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    for name, module in model.named_modules():
        if hasattr(module, "frozen_network"):
            frozen = module.frozen_network()
            left += [f"{name}.frozen_network().{key}" for key, t in chain(frozen.named_parameters(),
                                                                      frozen.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{what}: no weights for {first_keys(left)}")
