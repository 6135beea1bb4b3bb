"""What a recurrent layer will do, before it runs: :func:`explain`, the library
side of ``rnnkit explain`` (whose command line is :mod:`rnnkit.cli.explain`).

Given a layer's constructor arguments (or the layer itself) and, optionally,
the shape of its input, :func:`explain` says what each argument means, which
recurrence the layer computes, every shape involved (input, initial state,
output, final state, each parameter) with named axes, and the parameter count,
in English or Traditional Chinese. Shapes come from arithmetic, without
building or running a layer; the tests hold every one of them against ``torch.nn``.
Mistakes (an impossible argument, an input that does not fit) become
:class:`Problem` entries of the explanation instead of exceptions, so that it
can say what was expected.

The parts, one module each:

* :mod:`~rnnkit.explain.config`: :class:`LayerConfig`, what is asked about;
* :mod:`~rnnkit.explain.derive`: :func:`explain`, which works out the answer
  from the arguments and the table of kinds (:mod:`rnnkit.kinds`);
* :mod:`~rnnkit.explain.checks`: what the layer or its forward would reject;
* :mod:`~rnnkit.explain.result`: :class:`Explanation`, the answer, and its
  renderings (plain text, rich tables, JSON-ready data);
* :mod:`~rnnkit.explain.wording`: every sentence, in each language.

>>> e = explain(5, 8, num_layers=2, input_shape=(3, 2, 5))
>>> e.shapes["output"], e.shapes["h_n"], e.num_parameters
((3, 2, 8), (2, 2, 8), 264)
"""

from __future__ import annotations

from rnnkit.explain.config import LayerConfig
from rnnkit.explain.derive import LANGS, explain, meaning
from rnnkit.explain.result import Explanation, ParameterShape, Problem, TensorShape

__all__ = [
    "LANGS", "Explanation", "LayerConfig", "ParameterShape", "Problem", "TensorShape",
    "explain", "meaning",
]
