"""course_lib: the small PyTorch library behind the Robust and Trustworthy ML course.

Three wings, visible from the folder listing:

* the library (this folder): one module per concept, listed below;
* :mod:`course_lib.widgets`: the plots and interactive explorers the lectures show;
* :mod:`course_lib.grading`: what a TA runs (release, validate, the sandboxed autograder).

The library's public API, in the order of the lectures:

* :func:`setup`, :func:`get_device`, :func:`seed_everything`, :func:`generator`
  (:mod:`course_lib.device`): every lecture's first code cell
* :mod:`course_lib.data`: ``load_dataset(name, ...)``, ``batches``, ``binary_task``
* :mod:`course_lib.models`: small MLP and CNN builders, ``evaluating(model)``
* :mod:`course_lib.optim`, :mod:`course_lib.objectives`: GD and SGD written from scratch (lecture 1)
* :mod:`course_lib.train`: ``train(...)``, ``evaluate(...)``, with :mod:`course_lib.losses`: the
  batch losses of standard, adversarial and noise-augmented training (IBP and CROWN-IBP training's
  are in :mod:`course_lib.certified_losses`), and
  :mod:`course_lib.evaluation`: ``accuracy(...)``, the one accuracy loop (also ``cl.train.accuracy``)
* :mod:`course_lib.attacks`: FGSM and PGD (lectures 2 and 3), APGD (:mod:`course_lib.apgd`) and the
  worst case over attacks (:mod:`course_lib.robust_evaluation`), on :mod:`course_lib.attack_base`
  (the input contract, the CE / margin / DLR losses); :mod:`course_lib.zoo`: trained models
* :mod:`course_lib.ibp`: interval bound propagation and certification (lecture 4), on
  :mod:`course_lib.layers` (the table of layer types: each one's interval rule and sound-rounding
  rule) and :mod:`course_lib.intervals` (the input box, one-layer interval helpers), with
  :mod:`course_lib.verification` (the LP relaxation and the exact MILP on a tiny network) and
  :mod:`course_lib.rounding` (outward rounding: certificates that hold in floating point);
  :mod:`course_lib.crown`: linear-relaxation bounds (CROWN, CROWN-IBP, alpha-CROWN; ``sound=True``
  by :mod:`course_lib.crown_sound`) and certification with them, on :mod:`course_lib.specification`
  (the matrix C of ``C @ logits``: the margins, the identity); :mod:`course_lib.certified_losses`:
  the batch losses of IBP and CROWN-IBP training
* :mod:`course_lib.smoothing`: randomized smoothing, ``Smooth`` and Clopper-Pearson (lecture 5);
  :mod:`course_lib.smoothing_2d`: the same on a toy classifier of the plane
* :mod:`course_lib.svm`: a hinge-loss SVM (SMO); :mod:`course_lib.poisoning`: the poisoning
  attack on it (lecture 6)
* :mod:`course_lib.backdoor`, :mod:`course_lib.keyed_backdoor`: BadNets-style backdoors and an
  undetectable, keyed one (lecture 7)
* :mod:`course_lib.blackbox`: zeroth-order gradient estimates, NES and Square under a query budget;
  :mod:`course_lib.gradient_masking`: defences that mask gradients, BPDA and EOT (lecture 8)
* :mod:`course_lib.feature_collision`, :mod:`course_lib.transfer_poisoning`: clean-label poisoning
  of a network; :mod:`course_lib.backdoor_defences`: spectral signatures, activation clustering;
  :mod:`course_lib.certified_training`: certified training against poisoning, on
  :mod:`course_lib.interval_gradients` and :mod:`course_lib.descent_bounds` (lecture 10)
* :mod:`course_lib.language_model`: a small character-level language model, greedy generation and its
  training corpus, shipped by :mod:`course_lib.chat_zoo`; :mod:`course_lib.jailbreak`: the target loss
  and GCG; :mod:`course_lib.smoothllm`: SmoothLLM's perturbations, vote and guarantee;
  :mod:`course_lib.k_instability`: the guarantee's hypothesis, measured (lecture 9)

Arguments are checked by one policy (:mod:`course_lib._checks`): a Python or NumPy number or a
0-d tensor wherever a number is expected, never a bool; a bad argument is an error that names it.

Tensors in, tensors out, on whatever device the input is on.

Submodules load on first use (``cl.attacks`` imports :mod:`course_lib.attacks`), so the
grading tools that run as ``python -m course_lib.grading...`` do not pay for importing torch.

Modules that moved into a wing keep their old names as aliases (``import
course_lib.attack_widgets`` is :mod:`course_lib.widgets.attacks`), so notebooks written
before the move still run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["apgd", "attack_base", "attacks", "backdoor", "backdoor_defences", "blackbox", "certified_losses",
           "certified_training", "chat_zoo", "crown", "crown_sound", "data", "descent_bounds", "device", "evaluation",
           "feature_collision", "generator", "get_device", "gradient_masking", "grading", "ibp", "interval_gradients",
           "intervals", "jailbreak", "k_instability", "keyed_backdoor", "language_model", "layers", "losses", "models", "objectives",
           "optim", "poisoning", "robust_evaluation", "rounding", "seed_everything", "setup", "smoothing",
           "smoothing_2d", "smoothllm", "specification", "svm", "train", "transfer_poisoning", "verification",
           "widgets", "zoo"]
__version__ = "0.1.0"

_FROM_DEVICE = ("generator", "get_device", "seed_everything", "setup")

# old module name -> where it lives now
MOVED = {
    "attack_widgets": "course_lib.widgets.attacks",
    "ibp_widgets": "course_lib.widgets.ibp",
    "smoothing_widgets": "course_lib.widgets.smoothing",
    "poisoning_widgets": "course_lib.widgets.poisoning",
    "plots": "course_lib.widgets.plots",
    "release": "course_lib.grading.release",
    "validate": "course_lib.grading.validate",
    "feedback": "course_lib.grading.feedback",
    "autograde_worker": "course_lib.grading.worker",
    "sandbox": "course_lib.grading.sandbox",
    "sandbox_exec": "course_lib.grading.sandbox.execute",
    "sandbox_zygote": "course_lib.grading.sandbox.zygote",
    "sandbox_namespaces": "course_lib.grading.sandbox.namespaces",
    "sandbox_kernel": "course_lib.grading.sandbox.kernel",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import course_lib.<old name>`` gives the module at its new place (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        # the import system reads sys.modules back after exec_module: the real module is returned
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__.partition(".")[2]])


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str):
    if name in _FROM_DEVICE:
        return getattr(importlib.import_module("course_lib.device"), name)
    if name in MOVED:
        return importlib.import_module(MOVED[name])
    try:
        return importlib.import_module(f"course_lib.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"course_lib.{name}":
            raise AttributeError(f"module 'course_lib' has no attribute {name!r}") from None
        raise


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
