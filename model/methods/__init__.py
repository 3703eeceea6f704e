"""The methods built on CLIP4Clip's skeleton, one module each, and their registry.

``BUILT_IN`` is imported in its order, which is the order of ``--sim-header``'s and ``--peft``'s
choices, of the checkpoint formats and of the argument groups in ``--help``. A method of one's
own is a module outside this package that registers itself (docs/adding-a-method.md);
``--methods-from`` imports it.
"""

import importlib

from model.methods import registry

BUILT_IN = ("tight_transf", "drl", "emcl", "eercf", "peft_adapters", "tempme", "dgl", "dual_attention", "xpool", "tmass")

for _name in BUILT_IN:
    importlib.import_module(f"model.methods.{_name}")
registry.built_ins_loaded()
