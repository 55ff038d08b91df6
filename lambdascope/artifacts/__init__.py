"""Inspect users' artifacts before anything trusts them: safetensors weights, datasets, `.pt2` models.

Nothing here unpickles user data with a general unpickler. The `inspect_*` functions are cheap and
are meant to run on every upload (registry side); `load_*` re-run the inspection and then load.

`torch.export.load` is NOT safe on untrusted files. In torch 2.13 a crafted `.pt2` reaches Python
code execution on load (or on the first call of the loaded program) through the triggers below.
`inspect_pt2` accepts only the members and config values a plain ``torch.export.save`` of a
tensor-only program writes, and rejects every one of them (the "inspection" column: the module
that refuses it). `load_exported_program` then loads a copy of the archive that it re-packs itself
from the inspected members (so torch's zip reader never sees the user's bytes, and there is no room
for a zip-parser disagreement), via torch's new-format loader only, with the dangerous calls
temporarily made to raise as a second line of defence (the "at load" column, all in loader.py).

    trigger: what torch 2.13 does with it           inspection        at load (loader.py)
    1  weights whose payload config says            pt2.py            torch.load raises unless
       ``use_pickle``: torch.load(weights_only=False)                 weights_only=True
    2  tensor constants with ``use_pickle``: same   pt2.py            same
    3  sample inputs that fail a weights-only       pickle_scan.py    same; and torch only sees
       load: fallback torch.load(weights_only=False)                  our re-save of them
       (refused: GLOBAL/STACK_GLOBAL of names off
       the allow-list, INST/OBJ/EXT*/PERSID, globals
       from computed strings, a failing weights-only
       load here, a result other than (args, kwargs)
       of dense tensors and plain scalars)
    4  constants ``opaque_obj_*``: pickle.loads;    pt2.py (payload   pickle.loads and the
       ``custom_obj_*``: TorchScript unpickler      file names,       TorchScript unpickler
       (not shown exploitable, refused all the      members);         raise
       same); custom objects in the program JSON    program.py (JSON)
    5  legacy ``data/weights/model.pt`` /           pt2.py            as 1
       ``data/constants/model.pt``: as 3
    6  ``expr_str`` shape strings in the program    program.py        the deserializer's sympify
       JSON: sympy.sympify, which evals             (srepr grammar)   re-checks each string
    7  ``guards_code`` strings: exec on the first   program.py        re-checked on the loaded
       call of ``ep.module()``                      (shape arith.)    program
    8  ``data/aotinductor/`` members: a native      pt2.py            AOTI loading raises; AOTI
       shared library is loaded (by design; not                       runners refused
       crafted in the tests: needs a compiler)
    9  no new-format model: torch.export.load's     archive.py (no    load_pt2 only, never
       legacy-format path, which unpickles          top folder);      torch.export.load
                                                    pt2.py (no
                                                    models/model.json)
    10 graph call targets other than ATen ops and   program.py        -
       basic scalar ops (custom ops, other
       torch.ops namespaces, higher-order ops,
       Python callables such as torch.os.system,
       aten from_file), subgraphs, operator args

Also refused, so that what is inspected is what is loaded: zips with unsafe member names (absolute,
'..'/'.', backslashes, ':', odd characters), case-folded duplicates, encryption, compression other
than stored/deflate, a comment, overlapping members or hidden bytes, over 65,536 members, more than
`max_uncompressed_bytes` or a >100x ratio past 64 MiB (zip bomb), members over their read limit, bad
CRCs (archive.py); pickles and other formats uploaded as safetensors weights or datasets
(safetensors.py, which names what the file is via common.py); files that are not regular (FIFO,
device, directory) or are empty (common.py). Zip symlink entries are not checked as such: the gate
writes no member out as a file, and the re-packed copy torch reads has fresh entries.

Modules: common (ArtifactError, opening files), safetensors, dataset, archive (the zip reader),
program (the program JSON), pickle_scan (sample inputs), pt2 (`inspect_pt2`), loader.
"""
from lambdascope.artifacts.common import ArtifactError
from lambdascope.artifacts.dataset import FLOAT_DTYPES, ID_DTYPES, DatasetInfo, inspect_dataset, load_dataset
from lambdascope.artifacts.loader import load_exported_program
from lambdascope.artifacts.pt2 import ExportInfo, inspect_pt2
from lambdascope.artifacts.safetensors import TensorInfo, inspect_safetensors, load_safetensors

__all__ = [
    "FLOAT_DTYPES",
    "ID_DTYPES",
    "ArtifactError",
    "DatasetInfo",
    "ExportInfo",
    "TensorInfo",
    "inspect_dataset",
    "inspect_pt2",
    "inspect_safetensors",
    "load_dataset",
    "load_exported_program",
    "load_safetensors",
]
