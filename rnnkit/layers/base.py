"""What every rnnkit layer and cell shares: parameters, input checks, conversions.

:class:`RecurrentLayer` is the sequence module behind ``RNN`` (and the other
sequence layers): it owns the parameters under ``torch.nn``'s names, turns
every accepted input form (batched, batch-first, unbatched, packed) into one
time-first padded tensor plus lengths, checks shapes, and hands the work to
:func:`rnnkit.layers.driver.run_stack`. :class:`RecurrentCell` is the single
step module behind ``RNNCell``. Subclasses only say which kind they run
(a key of :data:`rnnkit.kinds.KINDS`); the table gives the rest.

Beyond torch.nn, keyword-only: ``layer_norm`` (both; extra ``ln_*``
parameters after torch's own), ``recurrent_dropout`` and ``zoneout``
(sequence layers; their masks are drawn in the driver). With their defaults
a module is exactly its ``torch.nn`` twin.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit import kernels
from rnnkit.kernels.ops import first_bad_length
from rnnkit.kernels.reference import DirectionWeights, State
from rnnkit.kinds import KINDS, cell_of
from rnnkit.layers.checks import check_dropout, check_flag, check_probability, check_proj_size, check_size
from rnnkit.layers.driver import run_stack
from rnnkit.layers.shapes import layer_norm_shapes, parameter_shapes, suffix


_MISSING = object()
"""What ``_parameters.get`` gives for a name that is no registered parameter."""

_WEIGHT_FIELDS = {
    "weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh", "weight_hr": "w_hr",
    **{name: name for name in ("ln_ih_weight", "ln_hh_weight", "ln_c_weight", "ln_c_bias")},
}
"""Parameter names (without the layer suffix) -> :class:`DirectionWeights` fields."""

_EXTENSIONS = {"layer_norm": False, "recurrent_dropout": 0.0, "zoneout": 0.0}
"""The options beyond torch.nn and their defaults (with which a module is torch's)."""


def _is_layer_norm(name: str) -> bool:
    """Whether a parameter is one of ``layer_norm``'s (not torch's own)."""
    return name.startswith("ln_")



def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _same_device(a: Tensor, b: Tensor) -> bool:
    # is_cpu first: comparing .device builds two device objects, a cost on every call
    return (a.is_cpu and b.is_cpu) or a.device == b.device


def _check_input_tensor(owner: str, x: Tensor, weight: Tensor) -> None:
    """The input's dtype (except under autocast, as in torch) and device against the weights'."""
    if x.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(
            f"{owner}: input dtype ({x.dtype}) does not match weight dtype "
            f"({weight.dtype}); convert the input with input.to({weight.dtype}) "
            f"or the module with module.to({x.dtype})"
        )
    if not _same_device(x, weight):
        raise RuntimeError(f"{owner}: input is on {x.device} but the weights are on {weight.device}")


def _check_state(
    owner: str, hx: Any, names: tuple[str, ...], expected: list[tuple[int, ...]], x: Tensor,
    dims: tuple[int, ...] | None = None,
) -> State:
    """A user's ``hx`` (one tensor, or a tuple with one tensor per state part)
    checked against the expected shapes and the input's dtype and device.
    A part with a number of dimensions outside ``dims`` (when given) is a
    ``ValueError``, as torch's cells raise; any other wrong shape a ``RuntimeError``."""
    if len(names) > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != len(names)):
        raise TypeError(
            f"{owner}: hx should be a tuple ({', '.join(names)}) of {len(names)} tensors, "
            f"got {type(hx).__name__}"
        )
    parts = (hx,) if len(names) == 1 else tuple(hx)
    for part, shape in zip(parts, expected):  # the common case, in one test a part: all is well
        if not (isinstance(part, Tensor) and part.shape == shape and part.dtype == x.dtype and _same_device(part, x)):
            break
    else:
        return parts
    for index, (part, shape) in enumerate(zip(parts, expected)):
        if not isinstance(part, Tensor):
            raise TypeError(
                f"{owner}: {_state_part(names, index)} should be a Tensor, got {type(part).__name__}"
            )
        if dims is not None and part.dim() not in dims:
            raise ValueError(
                f"{owner}: Expected {_state_part(names, index)} to be "
                f"{' or '.join(f'{d}D' for d in dims)}, got {part.dim()}D tensor of shape {_shape(part)} instead"
            )
        if part.shape != shape:
            raise RuntimeError(
                f"{owner}: Expected {_state_part(names, index)} size {shape}, got {_shape(part)}"
            )
        if part.dtype != x.dtype:
            raise ValueError(
                f"{owner}: {_state_part(names, index)} dtype ({part.dtype}) does not match "
                f"input dtype ({x.dtype})"
            )
        if not _same_device(part, x):
            raise RuntimeError(
                f"{owner}: {_state_part(names, index)} is on {part.device} but the input is on {x.device}"
            )
    return parts


def _check_lengths(owner: str, lengths: Any, steps: int, batch: int) -> Tensor:
    """``lengths=`` checked against the padded input's ``T`` and ``N``, as the
    ``(N,)`` int64 CPU tensor the backends index with."""
    expected = f"one length per sequence ({batch}), each in 1..{steps}"
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(
                f"{owner}: lengths should be an integer tensor or a list of ints, "
                f"got a tensor of dtype {lengths.dtype}"
            )
        if lengths.dim() != 1:
            raise ValueError(
                f"{owner}: lengths should be 1-D, {expected}; got a {lengths.dim()}-D tensor "
                f"of shape {_shape(lengths)}"
            )
        lengths = lengths.to("cpu", torch.int64)
    elif isinstance(lengths, (list, tuple)):
        integral = [isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in lengths]
        if not all(integral):
            wrong = lengths[integral.index(False)]
            raise TypeError(
                f"{owner}: lengths should be a list of ints or an integer tensor, "
                f"got an item {wrong!r} of type {type(wrong).__name__}"
            )
        lengths = torch.tensor([int(v) for v in lengths], dtype=torch.int64)
    else:
        raise TypeError(
            f"{owner}: lengths should be a 1-D integer tensor or a list of ints, "
            f"got {type(lengths).__name__}"
        )
    if lengths.numel() != batch:
        raise RuntimeError(f"{owner}: Expected {expected}: got {lengths.numel()} lengths")
    # A graph being traced holds no values to check (a data-dependent branch would
    # break it): the rnnkit::layer operator checks them when the graph runs.
    bad = None if kernels.tracing() else first_bad_length(lengths, steps)
    if bad is not None:
        raise RuntimeError(
            f"{owner}: Expected {expected}; got lengths[{bad}] = {int(lengths[bad])}"
        )
    return lengths


def _state_part(names: tuple[str, ...], index: int) -> str:
    """How an error message names part ``index`` of a user's ``hx``."""
    return "hx" if len(names) == 1 else f"hx[{index}] ({names[index]})"


class _TorchTwin(nn.Module):
    """What a layer and a cell share with their ``torch.nn`` twin: their kind's
    state parts, the initialisation, and ``from_torch`` / ``to_torch`` (the configuration
    attributes carry the names of the twin's constructor arguments)."""

    torch_class: ClassVar[type[nn.Module]]
    config_names: ClassVar[tuple[str, ...]]
    kind: str
    hidden_size: int
    _weight_order: tuple[str, ...]  # every weight's name, in the order the kernels take them
    _weights_cache: tuple[list[Tensor | None], Any] | None = None

    def _cached_weights(self, build: Callable[[list[Tensor | None]], Any]) -> Any:
        """``build(tensors)``, the weights named in ``_weight_order`` as the
        kernels take them, kept from call to call rather than rebuilt.

        What is kept holds the parameter objects themselves, so whatever changes
        them in place (an optimiser step, ``load_state_dict``, ``.to()``,
        ``.data =``) shows through. It is built again when a parameter is
        replaced by another object, and not kept at all while a weight is not
        a registered parameter but computed on access (weight norm,
        ``torch.nn.utils.parametrize``), nor while torch traces the call into a graph."""
        if kernels.tracing():  # a graph must not see attributes assigned while it is traced
            return build([getattr(self, name) for name in self._weight_order])
        cache = self._weights_cache
        if cache is not None:
            # The same objects, by identity (== would compare the tensors' values).
            now = map(self._parameters.get, self._weight_order)
            if all(map(operator.is_, cache[0], now)):
                return cache[1]
        registered = list(map(self._parameters.get, self._weight_order))
        tensors = [getattr(self, name) for name in self._weight_order]
        built = build(tensors)
        plain = all(  # registered Parameters (not torch.func.functional_call's stand-ins)
            self._parameters.get(name, _MISSING) is tensor and (tensor is None or isinstance(tensor, nn.Parameter))
            for name, tensor in zip(self._weight_order, tensors)
        )
        self._weights_cache = (registered, built) if plain else None
        return built

    @property
    def state_names(self) -> tuple[str, ...]:
        """The parts of the state: ``('h',)``, or an LSTM's ``('h', 'c')``."""
        return cell_of(self.kind).state

    def reset_parameters(self) -> None:
        """Draw torch's own parameters from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)),
        in ``torch.nn``'s order, so that equal seeds give equal weights; the
        layer-norm gains start at 1 and the shift at 0, drawing nothing."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for name, weight in self.named_parameters():
            name = name.removeprefix("parametrizations.")  # a parametrized weight's original
            if not _is_layer_norm(name):
                nn.init.uniform_(weight, -bound, bound)
            elif name.startswith("ln_c_bias"):
                nn.init.zeros_(weight)
            else:
                nn.init.ones_(weight)

    def _extensions_in_use(self) -> list[str]:
        """The options beyond torch.nn this module sets, as ``name=value``."""
        return [
            f"{name}={getattr(self, name)}" for name, default in _EXTENSIONS.items()
            if getattr(self, name, default) != default
        ]

    @classmethod
    def from_torch(cls, module: nn.Module):
        """The rnnkit module with the configuration, weights, device, dtype and
        training mode of ``module``, an instance of the ``torch.nn`` class of the same name."""
        if not isinstance(module, cls.torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a torch.nn.{cls.torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        return _copy_module(module, cls, cls.config_names)

    def to_torch(self) -> nn.Module:
        """The ``torch.nn`` module with this module's configuration and weights;
        ``ValueError`` for a module using an option torch.nn does not have."""
        used = self._extensions_in_use()
        if used:
            raise ValueError(
                f"{type(self).__name__}.to_torch: torch.nn.{self.torch_class.__name__} has no "
                f"{', '.join(used)}; only a module without these options converts"
            )
        return _copy_module(self, self.torch_class, self.config_names)  # type: ignore[arg-type]

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling any:
        # TorchScript cannot compile the layers' Python (optional inputs of
        # several forms, the backend table), so say at once what works instead.
        raise RuntimeError(
            f"rnnkit.{type(self).__name__} cannot be compiled by torch.jit.script; "
            f"use torch.jit.trace(model, example_input), torch.export.export or torch.compile"
        )


def _copy_module(source: nn.Module, target_class: type, config_names: tuple[str, ...]):
    weight = next(source.parameters())
    config = {name: getattr(source, name) for name in config_names}
    target = target_class(**config, device=weight.device, dtype=weight.dtype)
    target.load_state_dict(source.state_dict())
    for theirs, ours in zip(source.parameters(), target.parameters()):
        ours.requires_grad_(theirs.requires_grad)
    return target.train(source.training)


class RecurrentLayer(_TorchTwin):
    """A stack of recurrent layers run over whole sequences (see ``rnnkit.RNN``).

    Subclasses pass their ``kind`` (``'rnn_tanh'``, ``'rnn_relu'``, ``'lstm'``,
    ``'gru'``: a key of :data:`rnnkit.kinds.KINDS`); ``mode`` is torch's name
    for it (``'RNN_TANH'``, ..., ``'GRU'``), as on ``torch.nn.RNN``.
    """

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.mode = KINDS[kind].mode
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = check_flag("bias", bias)
        self.batch_first = check_flag("batch_first", batch_first)
        self.dropout = check_dropout(dropout, num_layers)
        self.bidirectional = check_flag("bidirectional", bidirectional)
        self.proj_size = check_proj_size(proj_size, hidden_size)
        self.layer_norm = check_flag("layer_norm", layer_norm)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = check_probability("zoneout", zoneout)

        factory = {"device": device, "dtype": dtype}
        # Per layer and direction, DirectionWeights field -> parameter name, in torch's order.
        self._weight_names: list[dict[str, str]] = []
        self._weight_shapes: dict[str, tuple[int, ...]] = {}
        cell = cell_of(kind)
        for layer, direction, shapes in parameter_shapes(
            len(cell.gates), input_size, hidden_size, num_layers, bias, bidirectional, proj_size,
            layer_norm=layer_norm, cell_norm=cell.cell_norm,
        ):
            names = {}
            for base_name, shape in shapes.items():
                name = base_name + suffix(layer, direction)
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                names[_WEIGHT_FIELDS[base_name]] = name
                self._weight_shapes[name] = shape
            self._weight_names.append(names)
        self._weight_order = tuple(self._weight_shapes)
        self._expected_shapes = list(self._weight_shapes.values())
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of ``h`` per direction: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters of each layer and direction, as ``torch.nn.RNN.all_weights``."""
        return [[getattr(self, name) for name in names.values()] for names in self._weight_names]

    @property
    def _flat_weights_names(self) -> list[str]:
        """Every parameter's name, layer by layer and direction by direction, as
        ``torch.nn.RNN._flat_weights_names``."""
        return [name for names in self._weight_names for name in names.values()]

    @property
    def _flat_weights(self) -> list[nn.Parameter]:
        """The parameters in :attr:`_flat_weights_names`' order, as
        ``torch.nn.RNN._flat_weights``: read on each access, so always the
        current ones, also after a parameter is replaced."""
        return [getattr(self, name) for name in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """Does nothing: present so that code written for ``torch.nn`` runs unchanged."""

    def _direction_weights(self) -> list[list[DirectionWeights]]:
        """Each layer's weights, one :class:`DirectionWeights` per direction,
        checked against the shapes the layer was built with (the fused kernels
        index them without bounds checks)."""
        tensors, layers = self._cached_weights(self._group_weights)
        try:
            as_built = [t.shape for t in tensors] == self._expected_shapes
        except AttributeError:  # a weight set to None
            as_built = False
        if not as_built:
            for name, weight in zip(self._weight_order, tensors):
                if weight is None or weight.shape != self._weight_shapes[name]:
                    raise RuntimeError(
                        f"{type(self).__name__}: parameter {name} has shape "
                        f"{None if weight is None else _shape(weight)}, expected {self._weight_shapes[name]}"
                    )
        return layers

    def _group_weights(self, tensors: list[Tensor]) -> tuple[list[Tensor], list[list[DirectionWeights]]]:
        """``tensors`` (in ``_weight_order``) and the same grouped by layer and direction."""
        flat = iter(tensors)
        weights = [DirectionWeights(**{field: next(flat) for field in names}) for names in self._weight_names]
        d = self.num_directions
        return tensors, [weights[k * d : (k + 1) * d] for k in range(self.num_layers)]

    # -- forward -----------------------------------------------------------------

    def _state_sizes(self) -> tuple[int, ...]:
        """The feature size of each part of the state: ``h``, then ``c`` if any."""
        return (self.output_size,) + (self.hidden_size,) * (len(self.state_names) - 1)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Any = None,
        *,
        lengths: Tensor | list[int] | tuple[int, ...] | None = None,
        return_states: bool = False,
    ):
        """See the subclass docstring for shapes; ``lengths`` and
        ``return_states`` are described in :class:`rnnkit.RNN`'s."""
        owner = type(self).__name__
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError(
                    f"{owner}: lengths= is for a padded tensor; a PackedSequence carries its own lengths"
                )
            if return_states:
                raise ValueError(
                    f"{owner}: return_states=True takes a padded tensor, not a PackedSequence: "
                    "pass the padded batch with lengths= instead"
                )
            x, lengths = self._unpack(packed)
            batched = True
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"{owner}: input should be a Tensor or a PackedSequence, "
                    f"got {type(input).__name__}"
                )
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{owner}: Expected input to be 2D (L, H_in) or 3D "
                    f"({'N, L' if self.batch_first else 'L, N'}, H_in), "
                    f"got {input.dim()}D tensor of shape {_shape(input)} instead"
                )
            batched = input.dim() == 3
            if not batched:
                if lengths is not None:
                    raise ValueError(
                        f"{owner}: lengths= needs batched input "
                        f"({'N, L' if self.batch_first else 'L, N'}, H_in), got unbatched input "
                        f"of shape {_shape(input)}; an unbatched sequence has all its steps"
                    )
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input
            if lengths is not None:
                lengths = _check_lengths(owner, lengths, steps=x.shape[0], batch=x.shape[1])
        layers = self._direction_weights()
        self._check_input(x, layers[0][0].w_ih)
        state = self._initial_state(hx, x, batched)

        output, state_n, *states = run_stack(
            self.kind, x, state, layers, lengths, self.dropout, self.training,
            return_states=return_states, recurrent_dropout=self.recurrent_dropout, zoneout=self.zoneout,
        )
        dtype = self._autocast_result_dtype(x)
        if dtype is not None:
            output, state_n = output.to(dtype), tuple(s.to(dtype) for s in state_n)
            states = [tuple(s.to(dtype) for s in parts) for parts in states]

        if packed is not None:
            output = self._repack(output, lengths, packed)
        elif not batched:
            output = output.squeeze(1)
            state_n = tuple(s.squeeze(1) for s in state_n)
            states = [tuple(s.squeeze(2) for s in parts) for parts in states]
        elif self.batch_first:
            output = output.transpose(0, 1)
            states = [tuple(s.transpose(1, 2) for s in parts) for parts in states]
        final = state_n[0] if len(state_n) == 1 else state_n
        if not return_states:
            return output, final
        (parts,) = states
        return output, final, parts[0] if len(parts) == 1 else parts

    def _autocast_result_dtype(self, x: Tensor) -> torch.dtype | None:
        """The dtype that the ``torch.nn`` twin's results take under autocast where
        it differs from what this layer's own operations give, else ``None``."""
        return None

    def _check_input(self, x: Tensor, weight: Tensor) -> None:
        """``x (T, N, H_in)`` against the layer's size and the first weight's dtype and device."""
        owner = type(self).__name__
        _check_input_tensor(owner, x, weight)
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{owner}: input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.shape[-1]}"
            )
        if x.shape[0] == 0:
            raise RuntimeError(f"{owner}: Expected sequence length to be larger than 0, got 0")

    def _initial_state(self, hx: Any, x: Tensor, batched: bool) -> State:
        """``hx`` checked and made time-first batched: a tuple of ``(L*D, N, H)``."""
        owner = type(self).__name__
        batch = x.shape[1]
        stacked = self.num_layers * self.num_directions
        sizes = self._state_sizes()
        if hx is None:
            h0 = x.new_zeros(stacked, batch, sizes[0])
            if len(sizes) == 1:
                return (h0,)
            # Only ever read, so c_0 can share h_0's zeros when their sizes agree.
            return (h0, *(h0 if n == sizes[0] else x.new_zeros(stacked, batch, n) for n in sizes[1:]))
        expected = [(stacked, batch, n) if batched else (stacked, n) for n in sizes]
        state = _check_state(owner, hx, self.state_names, expected, x)
        return state if batched else tuple(part.unsqueeze(1) for part in state)

    @staticmethod
    def _unpack(packed: PackedSequence) -> tuple[Tensor, Tensor]:
        """A packed batch as a time-first padded tensor ``(T, N, H_in)`` and its
        ``(N,)`` lengths, both in the caller's (unsorted) batch order."""
        if packed.data.dim() != 2:
            raise ValueError(
                f"PackedSequence data should be 2D (sum of lengths, H_in), "
                f"got shape {_shape(packed.data)}"
            )
        return pad_packed_sequence(packed)

    @staticmethod
    def _repack(output: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
        """The padded ``(T, N, H)`` output packed with ``like``'s batch order."""
        if like.sorted_indices is not None:
            order = like.sorted_indices
            output, lengths = output.index_select(1, order.to(output.device)), lengths[order.cpu()]
        data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
        return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return ", ".join([s, *self._extensions_in_use()])


class RecurrentCell(_TorchTwin):
    """One recurrent step with explicit state (see ``rnnkit.RNNCell``)."""

    _weight_order: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # and any ln_*

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        # As torch's cells: sizes of zero and a ``bias`` of any type, read as true or false.
        self.input_size = check_size("input_size", input_size, zero_allowed=True)
        self.hidden_size = check_size("hidden_size", hidden_size, zero_allowed=True)
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        gate_size = len(cell_of(kind).gates) * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.layer_norm = check_flag("layer_norm", layer_norm)
        self._layer_norm_names: tuple[str, ...] = ()
        if layer_norm:
            shapes = layer_norm_shapes(len(cell_of(kind).gates), hidden_size, cell_of(kind).cell_norm)
            for name, shape in shapes.items():
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
            self._layer_norm_names = tuple(shapes)
            self._weight_order = RecurrentCell._weight_order + self._layer_norm_names
        self.reset_parameters()

    def forward(self, input: Tensor, hx: Any = None):
        """See the subclass docstring for shapes."""
        owner = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{owner}: input should be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{owner}: Expected input to be 1D (H_in) or 2D (N, H_in), "
                f"got {input.dim()}D tensor of shape {_shape(input)} instead"
            )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        weights = self._cached_weights(self._one_direction)
        _check_input_tensor(owner, x, weights.w_ih)
        if x.shape[1] != self.input_size:
            raise RuntimeError(
                f"{owner}: input has inconsistent input_size: got {x.shape[1]}, "
                f"expected {self.input_size}"
            )
        state = self._initial_state(hx, x, batched)
        new_state = kernels.run_cell(self.kind, x, state, weights)
        if not batched:
            new_state = tuple(s.squeeze(0) for s in new_state)
        return new_state[0] if len(new_state) == 1 else new_state

    def _one_direction(self, tensors: list[Tensor | None]) -> DirectionWeights:
        """The cell's weights (in ``_weight_order``) as the steps take them."""
        return DirectionWeights(**{_WEIGHT_FIELDS[name]: t for name, t in zip(self._weight_order, tensors)})

    def _initial_state(self, hx: Any, x: Tensor, batched: bool) -> State:
        owner = type(self).__name__
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            return (zeros,) * len(self.state_names)
        size = self.hidden_size
        expected = [(x.shape[0], size) if batched else (size,)] * len(self.state_names)
        state = _check_state(owner, hx, self.state_names, expected, x, dims=(1, 2))
        return state if batched else tuple(part.unsqueeze(0) for part in state)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return ", ".join([s, *self._extensions_in_use()])
