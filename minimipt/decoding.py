"""Token-by-token decoding: ``logits_t = decoder.step(tokens_t)`` advances a state it holds.

A MIPT language model's step costs a few dozen tiny kernels; at batch 1 on a GPU the time goes to
launching them from Python, not to the arithmetic. With a state of fixed shapes (a MIPT model with no
cache or a finite one), the step can be recorded once and replayed:

* ``"eager"``: ``logits, state = model.step(tokens_t, state)``, the definition (any model, any device).
* ``"graph"`` (CUDA): the same step on a state held in fixed buffers and updated in place, captured
  once as a CUDA graph and replayed for every token (PyTorch's ``torch.cuda.graph`` recipe: warm-up
  on a side stream, then capture).
* ``"compile"``: the in-place step compiled by ``torch.compile`` (fused kernels); on CUDA the compiled
  step is captured as a CUDA graph too. The first call compiles (seconds).
* ``"auto"``: ``AUTO_CUDA_MODE`` on CUDA for a fixed-shape state when at least ``MIN_GRAPH_STEPS``
  steps are asked for (a capture costs a few steps), else ``"eager"``. A capture that fails falls
  back to ``"eager"`` with a warning.

All modes compute the same logits and states (tests compare them with ``"eager"``). The replayed
step does not check token ids against the vocabulary (that would wait for the device every token):
:func:`~minimipt.generation.generate` feeds it tokens sampled from the model's own logits. Positions
of a learned position embedding are counted and checked on the host.
"""

from __future__ import annotations

import warnings

import torch

from .state import MIPTState

__all__ = ["Decoder", "MODES", "AUTO_CUDA_MODE", "MIN_GRAPH_STEPS", "fixed_shape"]

MODES = ("auto", "eager", "graph", "compile")
AUTO_CUDA_MODE = "graph"  # what "auto" takes on CUDA: the faster of "graph" and "compile" (bench generate)
MIN_GRAPH_STEPS = 16
_WARMUP = 3  # eager runs on a side stream before a capture (allocator, lazy initialisation, compilation)


def fixed_shape(state) -> bool:
    """Whether ``state`` keeps its shapes from token to token (a MIPT state without an unbounded cache)."""
    return isinstance(state, MIPTState) and all(s.cache is None or s.cache.slots is not None for s in state.layers)


class Decoder:
    """Holds ``model``'s ``state`` and advances it one token per :meth:`step` (see the module docstring).

    ``steps``: how many steps will be taken, if known (``"auto"`` captures a graph only when that pays).
    The logits returned in ``"graph"`` and ``"compile"`` modes live in a buffer that the next step
    overwrites: copy them to keep them.
    """

    def __init__(self, model, state, mode: str = "auto", steps: int | None = None):
        if mode not in MODES:
            raise ValueError(f"decode mode must be one of {MODES}; got {mode!r}")
        self.model = model
        device = state.t.device if isinstance(state, MIPTState) else next(model.parameters()).device
        static = fixed_shape(state) and hasattr(model, "_step")
        requested = mode
        if mode == "auto":
            mode = AUTO_CUDA_MODE if (device.type == "cuda" and static and (steps is None or steps >= MIN_GRAPH_STEPS)) \
                else "eager"
        if mode in ("graph", "compile") and not static:
            raise ValueError(f"decode mode {mode!r} needs a state of fixed shapes (a MIPT model with cache_slots "
                             f"0 or a finite K); got a {type(state).__name__} that grows: use 'eager'")
        if mode == "graph" and device.type != "cuda":
            raise ValueError(f"decode mode 'graph' needs a CUDA device; the state is on {device}: use 'eager'")
        self.mode, self.device, self.state = mode, device, state
        self._graph = self._logits = None
        if mode == "eager":
            return
        embed = model.embed
        self._limit = embed.max_len if embed.pos is not None else None
        self._t = int(state.t) if self._limit is not None else 0  # host-side position count
        self.state = state.clone()  # buffers updated in place
        self._tok = torch.zeros(state.batch_size, dtype=torch.long, device=device)
        self._fn = model._step if mode == "graph" else torch.compile(model._step, dynamic=False)
        if device.type == "cuda":
            try:
                self._capture()
            except Exception as err:  # noqa: BLE001 - "auto" falls back, an explicit mode reports it
                if requested != "auto":
                    raise
                warnings.warn(f"capturing the decoding step as a CUDA graph failed ({type(err).__name__}: {err}); "
                              "decoding eagerly", RuntimeWarning, stacklevel=2)
                self.mode, self.state = "eager", state

    @torch.no_grad()
    def _step_in_place(self) -> torch.Tensor:
        logits, new = self._fn(self._tok, self.state, check_positions=False)
        self.state.copy_(new)
        return logits

    @torch.no_grad()
    def _capture(self) -> None:
        saved = self.state.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP):
                self._step_in_place()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._logits = self._step_in_place()
        self.state.copy_(saved)  # the warm-up advanced the state; the capture itself ran nothing
        self._graph = graph

    @torch.no_grad()
    def step(self, tokens_t: torch.Tensor) -> torch.Tensor:
        """``tokens_t`` ``(B,)`` → logits ``(B, V)``; the held state advances by one token."""
        if self.mode == "eager":
            logits, self.state = self.model.step(tokens_t, self.state)
            return logits
        if not isinstance(tokens_t, torch.Tensor) or tuple(tokens_t.shape) != tuple(self._tok.shape) \
                or tokens_t.dtype.is_floating_point or tokens_t.dtype.is_complex or tokens_t.dtype == torch.bool:
            got = (tuple(tokens_t.shape), tokens_t.dtype) if isinstance(tokens_t, torch.Tensor) else type(tokens_t)
            raise ValueError(f"tokens_t must be integer token ids of shape {tuple(self._tok.shape)}; got {got}")
        if self._limit is not None:
            if self._t + 1 > self._limit:
                raise ValueError(f"sequence reaches position {self._t + 1} but the learned position embedding has "
                                 f"max_len={self._limit}")
            self._t += 1
        self._tok.copy_(tokens_t)
        if self._graph is not None:
            self._graph.replay()
            return self._logits
        return self._step_in_place()

