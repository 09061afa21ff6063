"""`--order confident`: an any-order model chooses where it predicts next (seed 000's "let the model decide").

An `--parallel any` run predicts any group of places from any set of known tokens. In this order a decoder
asks the model, at each step, for a distribution at every place not yet known (one query slot each) and
takes the k places whose distributions have the lowest entropy, k from the test step schedule
(`schedule.groups` at `--steps N`). Those places are the step's group, predicted as training predicted
groups. The choice reads the model and the tokens decoded so far and nothing else, so a decoder running the
same model follows the same order: no order bits are sent.

What asks the model is shared by every order the model chooses (`Order.adaptive`): `StreamGrammar.candidates`
and `choose` in `vistok.tokenize.stream`, `vistok.nn.gpt.choose_group`. This module is the rule alone.
"""

from __future__ import annotations

import numpy as np

from vistok.errors import UsageError
from vistok.tokenize.orders import Order, register_order


@register_order("confident")
class Confident(Order):
    summary = ("an --parallel any run's model picks its next places: at each step the k whose predicted "
               "distributions have the lowest entropy (eval, sample, compress: --order confident --steps N)")
    adaptive = True

    def choose(self, logp: np.ndarray, k: int) -> np.ndarray:
        """(k,) indices, ascending, of the rows of `logp` (R, V log-probabilities, -inf where the grammar rules
        a token out) whose distributions have the lowest entropy; a tie goes to the earlier row."""
        p = np.exp(logp)
        entropy = -np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0).sum(axis=1)
        return np.sort(np.argsort(entropy, kind="stable")[:k])

    def __call__(self, inp, rng):
        raise UsageError(f"order {self} is chosen by an --parallel any run's model while it decodes: train with "
                         "--order random --parallel any, then eval, sample or compress with --order confident")
